"""The calibration set, loaded and preprocessed once per recipe (calibration.npz), shared by every
quantization step. Random data only when the recipe opts in with calibration.source=random."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from builder import data

CALIBRATION_FILE = "calibration.npz"


def reads(config: dict[str, Any]) -> list[str]:
    return data.reads(config, "calibration")


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    source = ctx.config["calibration"]["source"]
    ctx.progress(f"loading calibration data ({source})")
    arrays, _ = data.load(ctx.config, ctx.paths, "calibration", ctx.workdir)
    with open(out / CALIBRATION_FILE, "wb") as handle:
        np.savez(handle, **arrays)
    count = len(next(iter(arrays.values())))
    (out / "calibration.json").write_text(json.dumps({"source": source, "samples": count, "random": source == "random"}))


def load_calibration(directory: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(directory / CALIBRATION_FILE) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return arrays, json.loads((directory / "calibration.json").read_text())


def batches(arrays: dict[str, np.ndarray]):
    """Each calibration sample as a batch of one, {input name: array}."""
    count = len(next(iter(arrays.values())))
    for index in range(count):
        yield {name: array[index : index + 1] for name, array in arrays.items()}


class CalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol over the calibration set (its quantization steps)."""

    def __init__(self, arrays, progress):
        self._batches = batches(arrays)
        self._count = len(next(iter(arrays.values())))
        self._seen = 0
        self._progress = progress

    def get_next(self):
        batch = next(self._batches, None)
        if batch is not None:
            self._seen += 1
            self._progress(f"calibrating: {self._seen}/{self._count} samples")
        return batch
