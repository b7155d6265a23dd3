"""Labelled evaluation: a model's score on the recipe's evaluation set (top-1 accuracy built in,
other metrics by import path), computed for the source model once and for every artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from builder import data, samples
from builder.errors import MdbuildError, first_line
from builder.imports import resolve_callable
from builder.inputs import batch_dim
from builder.samples import Sample, collate

EVALUATION_FILE = "evaluation.npz"
_BATCH = 64


def check_labels(row: np.ndarray, labels: np.ndarray, key: str) -> None:
    """For top1: integer class numbers the output (one sample's `row`) has a score for (more class folders
    than the model has classes, or float targets, would give a meaningless score)."""
    classes = int(np.asarray(row).size)
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= classes:
        shown = f"{labels.dtype} labels" if labels.dtype.kind not in "iu" else f"labels {labels.min()}..{labels.max()}"
        raise MdbuildError(f"{shown} for an output of {classes} classes: top1 reads class numbers 0..{classes - 1}",
                           key, "give integer class numbers (one image folder per class), or a metric "
                           "of your own (evaluation.metric) for other targets")


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


def run_batched(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], found: list[Sample],
                specs: list[dict[str, Any]], output: str, progress: Callable[[str], None]) -> list[np.ndarray]:
    """One output's row for each sample, feeding padded batches (batches of one sample when the batch is
    fixed); a row of a padded batch keeps the padded positions."""
    size = _BATCH if batch_dim(specs) else 1
    rows = []
    for start in range(0, len(found), size):
        if start % (size * 10) == 0:
            progress(f"evaluation: {start}/{len(found)} samples")
        rows.extend(np.asarray(run(collate(found[start : start + size], specs))[output]))
    return rows


def _score(metric: str, workdir: Path, rows: list[np.ndarray], labels: np.ndarray) -> float:
    """The metric over the rows, stacked into one array where they have one shape (else as a list)."""
    stacked = np.stack(rows) if len({row.shape for row in rows}) == 1 else rows
    function = metric_function(metric, workdir)
    try:
        return float(function(stacked, labels))
    except Exception as exc:  # the user's metric: named, with how it is called
        raise MdbuildError(f"the metric {metric} raised {type(exc).__name__}: {first_line(exc)}", "evaluation.metric",
                           f"it is called as fn(outputs {_shape(stacked)}, labels {_shape(labels)}) and returns a "
                           "number") from exc


def _shape(values) -> str:
    return str(list(values.shape)) if isinstance(values, np.ndarray) else f"(a list of {len(values)} arrays)"


def evaluate_source(ctx, out: Path, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
    """Scores the source model on the evaluation set and stores the set for the artifact's turn."""
    evaluation = ctx.config["evaluation"]
    if not evaluation["source"]:
        return
    found, labels = data.load(ctx.config, ctx.paths, "evaluation", ctx.workdir)
    if labels is None:
        raise MdbuildError("the evaluation data has no labels", "evaluation.source",
                           "give labels (npz 'labels'/'y', one image folder per class, or a factory returning (inputs, labels))")
    name = output_name(ctx.config)
    outputs = run_batched(run, found, ctx.config["model"]["inputs"], name, ctx.progress)
    if evaluation["metric"] == "top1":
        check_labels(outputs[0], labels, "evaluation.factory" if evaluation["source"] == "factory" else "evaluation.path")
    score = _score(evaluation["metric"], ctx.workdir, outputs, labels)
    samples.save(out / EVALUATION_FILE, found, labels=labels)
    (out / "evaluation.json").write_text(json.dumps(
        {"metric": evaluation["metric"], "output": name, "samples": len(labels), "source_score": score}))


def evaluate_artifact(ctx, reference: Path, run) -> dict[str, Any] | None:
    """The artifact's score next to the source's, and whether the drop is within
    evaluation.max_drop (the verify step's keys)."""
    if not (reference / "evaluation.json").is_file():
        return None
    info = json.loads((reference / "evaluation.json").read_text())
    found, extra = samples.load(reference / EVALUATION_FILE)
    outputs = run_batched(run, found, ctx.config["model"]["inputs"], info["output"], ctx.progress)
    score = _score(info["metric"], ctx.workdir, outputs, extra["labels"])
    budget = ctx.config["evaluation"]["max_drop"]
    drop = info["source_score"] - score
    return {**info, "artifact_score": score, "drop": drop, "max_drop": budget, "passed": bool(drop <= budget)}
