"""Accuracy of an artifact against the reference outputs, and the gate that judges it: used by the
build's verification and by the artifact's own --selftest (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


def compare(expected: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    """Errors over all samples: max abs, relative L2, worst per-sample cosine, top-1 agreement."""
    exp = expected.astype(np.float64).reshape(len(expected), -1)
    act = actual.astype(np.float64).reshape(len(actual), -1)
    diff = act - exp
    norm = float(np.linalg.norm(exp))
    cosines = [
        float(np.dot(a, e) / (np.linalg.norm(a) * np.linalg.norm(e))) if np.linalg.norm(a) * np.linalg.norm(e) > 0
        else float(np.array_equal(a, e))
        for a, e in zip(act, exp)
    ]
    metrics: dict[str, Any] = {
        "max_abs": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "rel_l2": float(np.linalg.norm(diff) / norm) if norm > 0 else float(np.linalg.norm(diff)),
        "min_cosine": min(cosines) if cosines else 1.0,
        "finite": bool(np.all(np.isfinite(actual))),
    }
    if expected.ndim >= 2 and expected.shape[-1] > 1:
        metrics["top1_agreement"] = float(np.mean(np.argmax(expected, -1) == np.argmax(actual, -1)))
    return metrics


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
