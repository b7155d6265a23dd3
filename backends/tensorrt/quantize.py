"""int8 for TensorRT (trt_quantize): explicit Q/DQ in the form TensorRT takes: symmetric int8
activations and weights (zero point 0), per-channel weight scales, biases left in float (TensorRT
rejects a DequantizeLinear of an int32 bias), calibrated on the recipe's data with ONNX Runtime.

Only the inputs of Conv, Gemm and MatMul are quantized, where TensorRT runs int8 kernels: quantizing
every op put a Q/DQ pair with scale inf after BERT's attention-mask Where (masked tokens then leaked
into the others), and TensorRT builds such a graph without a word; a scale that is not a finite
positive number fails the step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.onnx_graph import prepared_for_quantization
from builder.errors import MdbuildError
from builder.optimize.summary import write_summary
from builder.steps.calibration import CalibrationReader, load_calibration

_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


def reads(config: dict[str, Any]) -> list[str]:
    return ["trt_quantize.per_channel", "trt_quantize.calibration_method"]


def check(config: dict[str, Any]) -> None:
    method = config["trt_quantize"]["calibration_method"]
    if method not in _METHODS:
        raise MdbuildError(f"'{method}' is not valid", "trt_quantize.calibration_method",
                           f"choose one of: {', '.join(_METHODS)}")


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    from onnxruntime import quantization as q

    cfg = ctx.config["trt_quantize"]
    prepared = prepared_for_quantization(inputs["model"] / "model.onnx", ctx.progress)
    arrays, info = load_calibration(inputs["calibration"])
    try:
        _quantize(q, prepared, out / "model.onnx", CalibrationReader(arrays, ctx.progress), cfg)
    except AssertionError as exc:  # ONNX Runtime asserts on a range it cannot scale (NaN activations)
        raise MdbuildError(f"calibration gave activation ranges ONNX Runtime cannot quantize ({exc or 'scale issue'})",
                           "calibration.source", "check that the source model's outputs are finite on the "
                           "calibration data (model.inputs[i].low/high for integer inputs)") from exc
    _check_scales(out / "model.onnx")
    write_summary(out, "trt_quantize", per_channel=cfg["per_channel"], calibration_method=cfg["calibration_method"],
                  calibration_samples=info["samples"], calibration_source=info["source"],
                  random_calibration=info["random"])


def _quantize(q, prepared: Path, output: Path, reader, cfg: dict[str, Any]) -> None:
    q.quantize_static(
        str(prepared), str(output), reader,
        quant_format=q.QuantFormat.QDQ, per_channel=cfg["per_channel"],
        activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
        calibrate_method=getattr(q.CalibrationMethod, _METHODS[cfg["calibration_method"]]),
        op_types_to_quantize=list(_QUANTIZED_OPS),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )


def _check_scales(path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] in values:
            scale = values[node.input[1]]
            if not (np.isfinite(scale).all() and (scale > 0).all()):
                raise MdbuildError(f"quantizing '{node.input[0]}' gave the scale {scale.ravel()[:4].tolist()} (node "
                                   f"{node.name}): its calibrated range is not finite", "calibration.source",
                                   "calibrate on representative data, or build tensorrt_fp16")
