"""OpenVINO CPU target: ONNX -> IR (model.xml + model.bin). fp16 stores the weights in half
precision; int8 starts from the fp32 IR and is quantized by the nncf_quantize step. The arithmetic
each precision may use is the backend's (backends/openvino/__init__.py); the runtime chooses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.openvino import BACKEND
from builder.errors import MdbuildError

_HINTS = ("latency", "throughput")


def check(config: dict[str, Any]) -> None:
    options = config["target"]["options"]
    if options["performance_hint"] not in _HINTS:
        raise MdbuildError(f"'{options['performance_hint']}' is not valid", "target.options.performance_hint",
                           f"choose one of: {', '.join(_HINTS)}")
    if options["streams"] < 0:
        raise MdbuildError(f"{options['streams']} streams", "target.options.streams",
                           "give 0 (from the hint) or a positive count")


def compile_model(onnx_path: Path, config: dict[str, Any], out: Path) -> dict[str, Any]:
    import openvino as ov

    from backends.openvino.runtime import HINTS

    check(config)
    options = config["target"]["options"]
    precision = BACKEND.precisions[config["target"]["precision"]]
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=precision.stores == "fp16")
    return {
        "model_file": "model.xml",
        "device": "CPU",
        "compute_precisions": list(precision.computes),
        "fixed_hint": HINTS[fixed_hint(precision.computes)],
        "performance_hint": options["performance_hint"],
        "streams": options["streams"],
        "threads": config["hardware"]["intra_op_threads"],
    }


def fixed_hint(computes: tuple[str, ...]) -> str:
    """The hint for a server that hands it to the plugin as it is, on any CPU (Triton): one whose
    fallback stays within `computes`. Where a hint is missing the plugin falls back to its default,
    bf16 on CPUs with bf16 arithmetic, so fp16 is safe nowhere (it would become bf16 there) and bf16
    only where the target allows it."""
    return next(p for p in computes if p == "fp32" or "bf16" in computes)
