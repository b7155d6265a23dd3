"""int8 post-training quantization of the OpenVINO IR with NNCF, calibrated on the recipe's data.
Activation ranges default to min/max: NNCF's default estimator clipped outliers on ResNet-50
(worst logit error 32.6 against 1.38 with min/max, at the same speed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from builder.errors import MdbuildError
from builder.steps.calibration import batches, load_calibration
from builder.steps.compile import RUNTIME_FILE
from builder.transforms.record import write_record


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    cfg = ctx.spec.config["quantization"]
    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    if cfg["preset"] not in presets:
        raise MdbuildError(f"'{cfg['preset']}' is not valid", "quantization.preset", "choose one of: performance, mixed")
    if cfg["range_estimator"] not in ("minmax", "default"):
        raise MdbuildError(f"'{cfg['range_estimator']}' is not valid", "quantization.range_estimator",
                           "choose one of: minmax, default")
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
    write_record(out, "nncf_quantize", preset=cfg["preset"], range_estimator=cfg["range_estimator"],
                 calibration_samples=info["samples"], calibration_source=info["source"], random_calibration=info["random"])
