"""OpenVINO CPU target: ONNX -> IR (model.xml + model.bin). fp16 stores the weights in half
precision; int8 starts from the fp32 IR and is quantized by the nncf_quantize step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.errors import MdbuildError

# What each precision stores, and the arithmetic the CPU plugin may use, first choice first: the
# runtime takes the first one the serving CPU has and reads back what the plugin really computes in.
# Every list ends in f32, and none holds a precision the target does not name: left alone, the plugin
# computes in bf16 on CPUs that have it, for an fp32 model and for an f16 hint on a CPU without f16.
PRECISIONS = {
    "fp32": {"fp16_weights": False, "compute": ["f32"]},
    "fp16": {"fp16_weights": True, "compute": ["f16", "f32"]},
    "bf16": {"fp16_weights": False, "compute": ["bf16", "f32"]},
    "int8": {"fp16_weights": False, "compute": ["f32"]},  # the int8 ops come from nncf_quantize
}
_HINTS = ("latency", "throughput")


def compile_model(onnx_path: Path, target: dict[str, Any], hardware: dict[str, Any], out: Path) -> dict[str, Any]:
    import openvino as ov

    if hardware["performance_hint"] not in _HINTS:
        raise MdbuildError(f"'{hardware['performance_hint']}' is not valid", "hardware.performance_hint",
                           f"choose one of: {', '.join(_HINTS)}")
    precision = PRECISIONS[target["precision"]]
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=precision["fp16_weights"])
    return {
        "model_file": "model.xml",
        "device": "CPU",
        "compute_precisions": precision["compute"],
        "performance_hint": hardware["performance_hint"],
        "streams": hardware["streams"],
        "threads": hardware["intra_op_threads"],
    }
