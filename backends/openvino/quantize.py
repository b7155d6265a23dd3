"""int8 post-training quantization of the OpenVINO IR with NNCF (nncf_quantize), calibrated on the
recipe's data. Activation ranges default to min/max: NNCF's default estimator clipped outliers on
ResNet-50 (README, "Optimization steps")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from backends import quantization
from backends.accuracy_control import BUDGET
from backends.openvino.accuracy_control import quantize_within_limits
from builder.errors import MdbuildError
from builder.samples import role
from builder.optimize.summary import write_summary
from builder.steps.calibration import batches, load_calibration
from builder.steps.compile import RUNTIME_FILE

_PRESETS = ("performance", "mixed")
_ESTIMATORS = ("minmax", "default")
_MODEL_TYPES = ("auto", "transformer", "default")


def reads(config: dict[str, Any]) -> list[str]:
    keys = ["nncf_quantize.preset", "nncf_quantize.range_estimator", "nncf_quantize.model_type",
            "quantization.accuracy_control"]
    if config["quantization"]["accuracy_control"]:
        keys += [f"verify.tolerances.int8.{key}" for key in BUDGET]
    return keys + quantization.reads(config) + (["model.inputs"] if config["nncf_quantize"]["model_type"] == "auto" else [])


def check(config: dict[str, Any]) -> None:
    settings = config["nncf_quantize"]
    for key, choices in (("preset", _PRESETS), ("range_estimator", _ESTIMATORS), ("model_type", _MODEL_TYPES)):
        if settings[key] not in choices:
            raise MdbuildError(f"'{settings[key]}' is not valid", f"nncf_quantize.{key}", f"choose one of: {', '.join(choices)}")


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    cfg = ctx.config["nncf_quantize"]
    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    settings = json.loads((inputs["compiled"] / RUNTIME_FILE).read_text())
    model = ov.Core().read_model(str(inputs["compiled"] / settings["model_file"]))
    found, info = load_calibration(inputs["calibration"])
    samples = list(batches(found))
    advanced = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX) if cfg["range_estimator"] == "minmax" else None
    kept = quantization.kept_float(_nodes(model), ctx.config)
    transformer = _transformer(ctx.config)
    ctx.progress(f"NNCF post-training quantization on {len(samples)} samples"
                 f"{' (transformer model type)' if transformer else ''}, {len(kept)} nodes kept in float")
    options = dict(preset=presets[cfg["preset"]], subset_size=len(samples), advanced_parameters=advanced,
                   model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                   ignored_scope=nncf.IgnoredScope(names=list(kept), validate=False) if kept else None)
    if ctx.config["quantization"]["accuracy_control"]:
        quantized, control = quantize_within_limits(model, samples, options, ctx.config["verify"]["tolerances"]["int8"],
                                                    ctx.progress)
    else:
        quantized, control = nncf.quantize(model, nncf.Dataset(samples), **options), {}
    ov.save_model(quantized, str(out / settings["model_file"]), compress_to_fp16=False)
    shutil.copyfile(inputs["compiled"] / RUNTIME_FILE, out / RUNTIME_FILE)
    write_summary(out, "nncf_quantize", preset=cfg["preset"], range_estimator=cfg["range_estimator"],
                  model_type="transformer" if transformer else "default", calibration_samples=info["samples"],
                  calibration_source=info["source"], random_calibration=info["random"], **quantization.summary(kept), **control)


def _transformer(config: dict[str, Any]) -> bool:
    model_type = config["nncf_quantize"]["model_type"]
    if model_type != "auto":
        return model_type == "transformer"
    return any(role(spec) in ("ids", "mask") for spec in config["model"]["inputs"])


def _nodes(model) -> list[quantization.Node]:
    """The IR's operations as quantization nodes, in topological order; a tensor is `<node>:<port>`, a
    model input's tensor its name (as model.inputs names it)."""
    names = {parameter.get_friendly_name(): parameter.output(0).get_any_name() for parameter in model.get_parameters()}
    nodes = []
    for op in model.get_ordered_ops():
        reads = tuple(_tensor(port.get_source_output(), names) for port in op.inputs())
        writes = tuple(_tensor(output, names) for output in op.outputs())
        nodes.append(quantization.Node(op.get_friendly_name(), op.get_type_name(), reads, writes))
    return nodes


def _tensor(output, names: dict[str, str]) -> str:
    node = output.get_node().get_friendly_name()
    return names.get(node) or f"{node}:{output.get_index()}"
