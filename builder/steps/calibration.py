"""The calibration set, loaded and preprocessed once per recipe (calibration.npz), shared by every
quantization step. Random data only when the recipe opts in with calibration.source=random."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from builder import data, samples

CALIBRATION_FILE = "calibration.npz"


def reads(config: dict[str, Any]) -> list[str]:
    return data.reads(config, "calibration")


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    source = ctx.config["calibration"]["source"]
    ctx.progress(f"loading calibration data ({source})")
    found, _ = data.load(ctx.config, ctx.paths, "calibration", ctx.workdir)
    samples.save(out / CALIBRATION_FILE, found)
    (out / "calibration.json").write_text(json.dumps({"source": source, "samples": len(found), "random": source == "random"}))


def load_calibration(directory: Path) -> tuple[list[samples.Sample], dict]:
    found, _ = samples.load(directory / CALIBRATION_FILE)
    return found, json.loads((directory / "calibration.json").read_text())


def batches(found: list[samples.Sample]):
    """Each calibration sample as a batch of one, {input name: array} (samples may differ in length)."""
    for sample in found:
        yield {name: array[np.newaxis] for name, array in sample.items()}


class CalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol over the calibration set (its quantization steps)."""

    def __init__(self, found, progress):
        self._batches = batches(found)
        self._count = len(found)
        self._seen = 0
        self._progress = progress

    def get_next(self):
        batch = next(self._batches, None)
        if batch is not None:
            self._seen += 1
            self._progress(f"calibrating: {self._seen}/{self._count} samples")
        return batch
