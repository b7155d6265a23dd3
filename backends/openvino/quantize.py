"""int8 post-training quantization of the OpenVINO IR with NNCF (nncf_quantize), calibrated on the
recipe's data. Activation ranges default to min/max: NNCF's default estimator clipped outliers on
ResNet-50 (README, "Optimization steps")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from builder.errors import MdbuildError
from builder.optimize.summary import write_summary
from builder.steps.calibration import batches, load_calibration
from builder.steps.compile import RUNTIME_FILE

_PRESETS = ("performance", "mixed")
_ESTIMATORS = ("minmax", "default")


def reads(config: dict[str, Any]) -> list[str]:
    return ["nncf_quantize.preset", "nncf_quantize.range_estimator"]


def check(config: dict[str, Any]) -> None:
    settings = config["nncf_quantize"]
    for key, choices in (("preset", _PRESETS), ("range_estimator", _ESTIMATORS)):
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
    arrays, info = load_calibration(inputs["calibration"])
    samples = list(batches(arrays))
    advanced = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX) if cfg["range_estimator"] == "minmax" else None
    ctx.progress(f"NNCF post-training quantization on {len(samples)} samples")
    quantized = nncf.quantize(model, nncf.Dataset(samples), preset=presets[cfg["preset"]], subset_size=len(samples),
                              advanced_parameters=advanced)
    ov.save_model(quantized, str(out / settings["model_file"]), compress_to_fp16=False)
    shutil.copyfile(inputs["compiled"] / RUNTIME_FILE, out / RUNTIME_FILE)
    write_summary(out, "nncf_quantize", preset=cfg["preset"], range_estimator=cfg["range_estimator"],
                  calibration_samples=info["samples"], calibration_source=info["source"], random_calibration=info["random"])
