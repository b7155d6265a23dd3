"""Labelled evaluation: a model's score on the recipe's evaluation set (top-1 accuracy built in,
other metrics by import path), computed for the source model once and for every artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from builder import data
from builder.errors import MdbuildError
from builder.imports import resolve_callable

EVALUATION_FILE = "evaluation.npz"
_BATCH = 64


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(np.mean(np.argmax(outputs.reshape(len(outputs), -1), axis=-1) == labels) * 100.0)


def metric_function(name: str, workdir: Path) -> Callable[[np.ndarray, np.ndarray], float]:
    if name == "top1":
        return top1
    return resolve_callable(name, workdir, "evaluation.metric")


def output_name(config: dict[str, Any]) -> str:
    outputs = config["model"]["outputs"]
    chosen = config["evaluation"]["output"] or outputs[0]
    if chosen not in outputs:
        raise MdbuildError(f"'{chosen}' is not an output of the model", "evaluation.output",
                           f"choose one of: {', '.join(outputs)}")
    return chosen


def run_batched(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], arrays: dict[str, np.ndarray],
                output: str, dynamic_batch: bool, progress: Callable[[str], None]) -> np.ndarray:
    """One output over the whole set, feeding batches (of one sample when the batch is fixed)."""
    count = len(next(iter(arrays.values())))
    size = _BATCH if dynamic_batch else 1
    results = []
    for start in range(0, count, size):
        if start % (size * 10) == 0:
            progress(f"evaluation: {start}/{count} samples")
        results.append(np.asarray(run({n: a[start : start + size] for n, a in arrays.items()})[output]))
    return np.concatenate(results)


def dynamic_batch(model: dict[str, Any]) -> bool:
    return all(i["shape"] and isinstance(i["shape"][0], str) for i in model["inputs"])


def evaluate_source(ctx, out: Path, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
    """Scores the source model on the evaluation set and stores the set for the artifact's turn."""
    evaluation = ctx.config["evaluation"]
    if not evaluation["source"]:
        return
    arrays, labels = data.load(ctx.config, ctx.paths, "evaluation", ctx.workdir)
    if labels is None:
        raise MdbuildError("the evaluation data has no labels", "evaluation.source",
                           "give labels (npz 'labels'/'y', one image folder per class, or a factory returning (inputs, labels))")
    name = output_name(ctx.config)
    outputs = run_batched(run, arrays, name, dynamic_batch(ctx.config["model"]), ctx.progress)
    score = metric_function(evaluation["metric"], ctx.workdir)(outputs, labels)
    with open(out / EVALUATION_FILE, "wb") as handle:
        np.savez(handle, labels=labels, **{f"input/{n}": a for n, a in arrays.items()})
    (out / "evaluation.json").write_text(json.dumps(
        {"metric": evaluation["metric"], "output": name, "samples": len(labels), "source_score": score}))


def evaluate_artifact(ctx, reference: Path, run) -> dict[str, Any] | None:
    """The artifact's score next to the source's, and whether the drop is within
    evaluation.max_drop (the verify step's keys)."""
    if not (reference / "evaluation.json").is_file():
        return None
    info = json.loads((reference / "evaluation.json").read_text())
    with np.load(reference / EVALUATION_FILE) as archive:
        labels = archive["labels"]
        arrays = {key.split("/", 1)[1]: archive[key] for key in archive.files if key.startswith("input/")}
    outputs = run_batched(run, arrays, info["output"], dynamic_batch(ctx.config["model"]), ctx.progress)
    score = metric_function(info["metric"], ctx.workdir)(outputs, labels)
    budget = ctx.config["evaluation"]["max_drop"]
    drop = info["source_score"] - score
    return {**info, "artifact_score": score, "drop": drop, "max_drop": budget, "passed": bool(drop <= budget)}
