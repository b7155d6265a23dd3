"""int8 for TensorRT (trt_quantize): explicit Q/DQ in the form TensorRT takes: symmetric int8
activations and weights (zero point 0), per-channel weight scales, biases left in float (TensorRT
rejects a DequantizeLinear of an int32 bias), calibrated on the recipe's data with ONNX Runtime.

Only the inputs of Conv, Gemm and MatMul are quantized, where TensorRT runs int8 kernels: quantizing
every op put a Q/DQ pair with scale inf after BERT's attention-mask Where (masked tokens then leaked
into the others), and TensorRT builds such a graph without a word. Nodes on a mask path and those in
quantization.exclude stay in float; a scale that is not a finite positive number fails the step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends import quantization
from backends.onnx_graph import prepared_for_quantization
from backends.accuracy_control import BUDGET, quantize_within_limits
from builder.errors import MdbuildError
from builder.optimize.summary import write_summary
from builder.steps.calibration import CalibrationReader, load_calibration

_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


def reads(config: dict[str, Any]) -> list[str]:
    budget = [f"verify.tolerances.int8.{key}" for key in BUDGET] if config["quantization"]["accuracy_control"] else []
    return ["trt_quantize.per_channel", "trt_quantize.calibration_method", "quantization.accuracy_control",
            *quantization.reads(config), *budget]


def check(config: dict[str, Any]) -> None:
    method = config["trt_quantize"]["calibration_method"]
    if method not in _METHODS:
        raise MdbuildError(f"'{method}' is not valid", "trt_quantize.calibration_method",
                           f"choose one of: {', '.join(_METHODS)}")


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    import onnx
    from onnxruntime import quantization as q

    cfg = ctx.config["trt_quantize"]
    prepared = prepared_for_quantization(inputs["model"] / "model.onnx", ctx.progress)
    kept = quantization.kept_float(quantization.onnx_nodes(onnx.load(str(prepared)).graph), ctx.config)
    found, info = load_calibration(inputs["calibration"])

    def quantize(excluded: dict[str, str]) -> None:
        try:
            _quantize(q, prepared, out / "model.onnx", CalibrationReader(found, ctx.progress), cfg, list(excluded))
        except AssertionError as exc:  # ONNX Runtime asserts on a range it cannot scale (NaN activations)
            raise MdbuildError(f"calibration gave activation ranges ONNX Runtime cannot quantize ({exc or 'scale issue'})",
                               "calibration.source", "check that the source model's outputs are finite on the "
                               "calibration data (model.inputs[i].low/high for integer inputs)") from exc

    control = quantize_within_limits(quantize, prepared, out / "model.onnx", found, kept, ctx.config, ctx.progress)
    quantization.check_scales(out / "model.onnx", "calibrate on representative data, or build tensorrt_fp16")
    write_summary(out, "trt_quantize", per_channel=cfg["per_channel"], calibration_method=cfg["calibration_method"],
                  calibration_samples=info["samples"], calibration_source=info["source"],
                  random_calibration=info["random"], **quantization.summary(kept), **control)


def _quantize(q, prepared: Path, output: Path, reader, cfg: dict[str, Any], kept: list[str]) -> None:
    q.quantize_static(
        str(prepared), str(output), reader,
        quant_format=q.QuantFormat.QDQ, per_channel=cfg["per_channel"],
        activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
        calibrate_method=getattr(q.CalibrationMethod, _METHODS[cfg["calibration_method"]]),
        op_types_to_quantize=list(_QUANTIZED_OPS), nodes_to_exclude=kept,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
