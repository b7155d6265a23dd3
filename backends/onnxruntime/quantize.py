"""int8 quantization for ONNX Runtime (ort_quantize): static QDQ with per-channel int8 weights and
uint8 activations calibrated on the recipe's data, or dynamic quantization (weights only) with
ort_quantize.mode=dynamic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends import quantization
from backends.onnx_graph import prepared_for_quantization
from builder.errors import MdbuildError
from builder.optimize.summary import write_summary
from backends.accuracy_control import BUDGET, quantize_within_limits
from builder.steps.calibration import CalibrationReader, load_calibration

_MODES = ("static", "dynamic")
_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def calibrates(config: dict[str, Any]) -> bool:
    return config["ort_quantize"]["mode"] != "dynamic"


def reads(config: dict[str, Any]) -> list[str]:
    keys = ["mode", "per_channel", "weight_type"]
    shared = quantization.reads(config)
    if calibrates(config):
        keys += ["activation_type", "calibration_method"]
        shared.append("quantization.accuracy_control")
        if config["quantization"]["accuracy_control"]:
            shared += [f"verify.tolerances.int8.{key}" for key in BUDGET]
    return [f"ort_quantize.{key}" for key in keys] + shared


def check(config: dict[str, Any]) -> None:
    """Checks the keys the step reads (a dynamic quantization reads no activation settings)."""
    settings = config["ort_quantize"]
    choices = {"mode": _MODES, "weight_type": _TYPES, "activation_type": _TYPES, "calibration_method": _METHODS}
    for key in (path.split(".", 1)[1] for path in reads(config) if path.startswith("ort_quantize.")):
        if key in choices and settings[key] not in choices[key]:
            raise MdbuildError(f"'{settings[key]}' is not valid", f"ort_quantize.{key}",
                               f"choose one of: {', '.join(choices[key])}")
    if config["quantization"]["accuracy_control"] and not calibrates(config):
        raise MdbuildError("accuracy control needs static quantization (it returns calibrated nodes to float)",
                           "quantization.accuracy_control", "set ort_quantize.mode=static, or accuracy_control=false")


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    from onnxruntime import quantization as q

    import onnx

    cfg = ctx.config["ort_quantize"]
    prepared = prepared_for_quantization(inputs["model"] / "model.onnx", ctx.progress)
    kept = quantization.kept_float(quantization.onnx_nodes(onnx.load(str(prepared)).graph), ctx.config)
    weight_type = getattr(q.QuantType, _TYPES[cfg["weight_type"]])
    if cfg["mode"] == "dynamic":
        ctx.progress("dynamic quantization of the weights")
        q.quantize_dynamic(str(prepared), str(out / "model.onnx"), per_channel=cfg["per_channel"], weight_type=weight_type,
                           nodes_to_exclude=list(kept))
        write_summary(out, "ort_quantize", mode="dynamic", per_channel=cfg["per_channel"], weight_type=cfg["weight_type"],
                      **quantization.summary(kept))
        return
    found, info = load_calibration(inputs["calibration"])

    def quantize(excluded: dict[str, str]) -> None:
        q.quantize_static(
            str(prepared), str(out / "model.onnx"), CalibrationReader(found, ctx.progress),
            quant_format=q.QuantFormat.QDQ, per_channel=cfg["per_channel"],
            activation_type=getattr(q.QuantType, _TYPES[cfg["activation_type"]]), weight_type=weight_type,
            calibrate_method=getattr(q.CalibrationMethod, _METHODS[cfg["calibration_method"]]),
            nodes_to_exclude=list(excluded))

    control = quantize_within_limits(quantize, prepared, out / "model.onnx", found, kept, ctx.config, ctx.progress)
    quantization.check_scales(out / "model.onnx", "calibrate on representative data, or use ort_quantize.mode=dynamic")
    write_summary(out, "ort_quantize", mode="static", per_channel=cfg["per_channel"], activation_type=cfg["activation_type"],
                  weight_type=cfg["weight_type"], calibration_method=cfg["calibration_method"],
                  calibration_samples=info["samples"], calibration_source=info["source"], random_calibration=info["random"],
                  **quantization.summary(kept), **control)

