"""OpenVINO CPU target: ONNX -> IR (model.xml + model.bin). fp16 stores the weights in half
precision; int8 starts from the fp32 IR and is quantized by the nncf_quantize step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.errors import MdbuildError

# What the CPU plugin computes in. Set explicitly: left alone, the plugin picks bf16 on CPUs that
# have it, even for an fp32 model (ResNet-50 then differed from torch by 0.43 max abs).
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16", "int8": "f32"}
_HINTS = ("latency", "throughput")


def compile_model(onnx_path: Path, target: dict[str, Any], hardware: dict[str, Any], out: Path) -> dict[str, Any]:
    import openvino as ov

    if hardware["performance_hint"] not in _HINTS:
        raise MdbuildError(f"'{hardware['performance_hint']}' is not valid", "hardware.performance_hint",
                           f"choose one of: {', '.join(_HINTS)}")
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=target["precision"] == "fp16")
    return {
        "model_file": "model.xml",
        "device": "CPU",
        "inference_precision": INFERENCE_PRECISION[target["precision"]],
        "performance_hint": hardware["performance_hint"],
        "streams": hardware["streams"],
        "threads": hardware["intra_op_threads"],
    }
