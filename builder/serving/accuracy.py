"""Accuracy of an artifact against the reference outputs, and the gate that judges it: used by the
build's verification and by the artifact's own --selftest (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


def compare(expected: list[np.ndarray], actual: list[np.ndarray], class_scores: bool = False) -> dict[str, Any]:
    """Errors of one output over all cases (one array each, first axis the batch): max abs, relative L2,
    worst per-row cosine, and for class scores (batch, classes) top-1 agreement."""
    exp_rows = [row for array in expected for row in rows(array)]
    act_rows = [row for array in actual for row in rows(array)]
    if len(act_rows) != len(exp_rows):
        raise ValueError(f"{len(act_rows)} rows to compare with {len(exp_rows)}")
    diff_sq = sum(float(np.sum((a - e) ** 2)) for a, e in zip(act_rows, exp_rows))
    norm = float(np.sqrt(sum(float(np.sum(e ** 2)) for e in exp_rows)))
    cosines = [
        float(np.dot(a, e) / (np.linalg.norm(a) * np.linalg.norm(e))) if np.linalg.norm(a) * np.linalg.norm(e) > 0
        else float(np.array_equal(a, e))
        for a, e in zip(act_rows, exp_rows)
    ]
    metrics: dict[str, Any] = {
        "max_abs": max((float(np.max(np.abs(a - e))) for a, e in zip(act_rows, exp_rows) if e.size), default=0.0),
        "rel_l2": float(np.sqrt(diff_sq) / norm) if norm > 0 else float(np.sqrt(diff_sq)),
        "min_cosine": min(cosines) if cosines else 1.0,
        "finite": all(bool(np.all(np.isfinite(a))) for a in actual),
    }
    if class_scores:
        metrics["top1_agreement"] = float(np.mean([np.argmax(e) == np.argmax(a) for a, e in zip(act_rows, exp_rows)]))
    return metrics


def is_class_scores(array: np.ndarray) -> bool:
    """(batch, classes) with more than one class: what a classifier answers."""
    return array.ndim == 2 and array.shape[-1] > 1


def rows(array: np.ndarray) -> list[np.ndarray]:
    """A batch's rows, each flattened to float64 (a 0-d array is one row)."""
    array = np.asarray(array, dtype=np.float64)
    return list(array.reshape(len(array), -1)) if array.ndim else [array.reshape(1)]


def run_case(model, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The model's outputs for a case; row by row where it takes batches of one (a trace fixed to one row)."""
    rows = len(next(iter(feeds.values())))
    declared = getattr(model, "inputs", {})
    if rows == 1 or not declared or any(dims and dims[0] != 1 for _, dims in declared.values()):
        return model.run(feeds, names)
    results = [model.run({name: value[row : row + 1] for name, value in feeds.items()}, names) for row in range(rows)]
    return {name: np.concatenate([result[name] for result in results]) for name in names}


def read_cases(archive) -> list[dict[str, dict[str, np.ndarray]]]:
    """The cases of a samples/reference archive, keyed `<case>/<kind>/<name>` (kind: input, output,
    artifact): [{kind: {name: array}}] in case order."""
    cases: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    for key in archive.files:
        index, kind, name = key.split("/", 2)
        cases.setdefault(int(index), {}).setdefault(kind, {})[name] = archive[key]
    return [cases[index] for index in sorted(cases)]


# metric name in compare() -> (tolerance key, direction)
_GATES = {
    "rel_l2": ("max_rel_l2", "max"),
    "min_cosine": ("min_cosine", "min"),
    "max_abs": ("max_abs", "max"),
    "top1_agreement": ("min_top1_agreement", "min"),
}


def judge(metrics: dict[str, Any], tolerance: dict[str, Any]) -> list[dict[str, Any]]:
    """Every gated metric with its limit and whether it holds."""
    checks = []
    if not metrics["finite"]:
        checks.append({"metric": "finite", "value": False, "limit": True, "passed": False, "tolerance": "finite"})
    for metric, (key, direction) in _GATES.items():
        limit = tolerance.get(key)
        if limit is None or metric not in metrics:
            continue
        value = metrics[metric]
        passed = value <= limit if direction == "max" else value >= limit
        checks.append({"metric": metric, "value": value, "limit": limit, "passed": bool(passed), "tolerance": key})
    return checks
