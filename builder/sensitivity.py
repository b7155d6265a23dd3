"""What makes a comparison prove something (pure numpy): source outputs that carry information, and an
artifact that responds to each input as the source model does.

The response check: for each perturbed input and each float output the source's change responds in,
the artifact's gain along the source's change, <artifact change, source change> / |source change|^2
(1: the same response, 0: the input ignored), and the signal-to-noise ratio, |source change| over the
artifact's own error (on every unchanged case of the output's shape, and on the changed case across
the source's change). Every output is judged. An artifact whose output changes by less than 1e-3 of the
source's change ignores the input and fails at any level, where such a response would show over the
output's values (ratio x sqrt(values) >= 2). Otherwise, where the ratio is at least 2, |1 - gain| may
reach the limit plus 2 / ratio (never so much that a gain of 0 passes); below 2 the response is within
the artifact's own error and cannot be measured: the report says so. An input the source ignores moves
none of its outputs, integer ones included; an output whose shape follows the input's values is not
compared."""

from __future__ import annotations

import numpy as np

from builder.serving.accuracy import rows

# A source output whose largest magnitude, or whose spread over the samples relative to it, is at most
# this carries no information a comparison could test (measured: torchvision's ViT with its zero-initialised
# head gives exactly 0, efficientnet_b0 at most 3.6e-14, mobilenet_v3_small 2.0e-9; deeplabv3 the same
# output for every input). The same bound tells an input the source model ignores.
UNINFORMATIVE = 1e-6
# An artifact whose outputs change less than this fraction of the source's change ignores the input.
_IGNORED = 1e-3
# Below this signal-to-noise ratio a gain is not measurable.
_MEASURABLE = 2.0
# The ratio reported for an artifact without error (JSON has no infinity).
_CLEAN = 1e12


def uninformative(found: list[dict], described: dict, allowed: list[str]) -> dict[str, str]:
    """{output: why} for float outputs of the source model that are (near) zero on every case, or the same
    on every sample (given two samples or more): an artifact could ignore its inputs and still match them."""
    samples = [case for case, about in zip(found, described["cases"]) if about["kind"] == "sample"]
    result = {}
    for name in described["outputs"]:
        if name in allowed or not _is_float(found[0]["output"][name]):
            continue
        every = [row for case in found for row in rows(case["output"][name])]
        largest = max((float(np.abs(row).max()) for row in every if row.size), default=0.0)
        alone = [row for case in samples for row in rows(case["output"][name])]
        same = [row for row in alone if row.shape == alone[0].shape]
        if largest <= UNINFORMATIVE:
            result[name] = f"is (near) zero on every verification input (largest magnitude {largest:.3g})"
        elif described["samples"] > 1 and len(same) > 1 and \
                max(float(np.abs(row - same[0]).max()) for row in same) <= UNINFORMATIVE * largest:
            result[name] = f"is the same for all {described['samples']} verification samples"
    return result


def responses(found: list[dict], actual: list[dict], described: dict, limit: float | None,
              allowed: list[str]) -> dict[str, dict]:
    """{input: the response check} for every perturbed input (see the module's docstring)."""
    result = {}
    for index, about in enumerate(described["cases"]):
        perturbs = about["perturbs"]
        if not perturbs:
            continue
        base, changes, moved = perturbs["of"], {}, False
        for name in described["outputs"]:
            before, after = (np.asarray(found[i]["output"][name]) for i in (base, index))
            moved = moved or before.shape != after.shape or bool(np.any(before != after))
            if name not in allowed and _is_float(before):
                change = _change(found, actual, described, base, index, name)
                if change:
                    changes[name] = change
        result[perturbs["input"]] = _judged(perturbs["how"], changes, limit, moved)
    return result


def failure_text(name: str, entry: dict) -> str:
    chosen = entry["outputs"][entry["output"]]
    if entry["ignored"]:
        return (f"the artifact ignores input '{name}' ({entry['how']}): the source model's output '{entry['output']}' "
                f"changes by {chosen['source_change']:.3g} of itself, the artifact's by "
                f"{chosen['artifact_change'] * chosen['source_change']:.3g}")
    return (f"the artifact's response to input '{name}' ({entry['how']}) is not the source model's: output "
            f"'{entry['output']}' changes {chosen['gain']:.3g} times as much along the source's change (|1 - gain| "
            f"{entry['error']:.3g} > max_sensitivity_error {entry['limit']:g} + {entry['allowance']:.3g} for the "
            f"artifact's own error)")


def unmeasured_text(name: str, entry: dict) -> str:
    chosen = entry["outputs"][entry["output"]]
    if chosen["shape_changed"]:
        return (f"the response to input '{name}' ({entry['how']}) could not be measured: it changes the shape of "
                f"output '{entry['output']}' (a comparison of values needs the same shape)")
    return (f"the response to input '{name}' ({entry['how']}) could not be measured: it changes output "
            f"'{entry['output']}' by {chosen['source_change']:.3g} of itself, within the artifact's own error "
            f"(signal/noise {chosen['signal_to_noise']:.2g}); only an artifact ignoring it would have failed")


def _change(found: list[dict], actual: list[dict], described: dict, base: int, index: int, name: str) -> dict | None:
    before, after = (np.asarray(found[i]["output"][name], np.float64) for i in (base, index))
    ran, ran_after = (np.asarray(actual[i][name], np.float64) for i in (base, index))
    if not before.shape == after.shape == ran.shape == ran_after.shape:  # an output sized by its values (NMS)
        return {"source_change": None, "gain": None, "artifact_change": None, "signal_to_noise": 0.0,
                "detectable": False, "shape_changed": True}
    source, artifact = after - before, ran_after - ran
    size, scale = float(np.linalg.norm(source)), float(np.linalg.norm(before)) or 1.0
    if size <= UNINFORMATIVE * scale:
        return None
    # The artifact's own error: on every unchanged case of this shape (one draw is not an estimate where
    # an output has few values), and on the changed case across the source's change (along it lies the
    # response being judged, which must not count as noise).
    unit, missed = source / size, ran_after - after
    errors = [float(np.linalg.norm(np.asarray(actual[i][name], np.float64) - np.asarray(case["output"][name], np.float64)))
              for i, (case, about) in enumerate(zip(found, described["cases"]))
              if about["kind"] != "perturbed" and np.shape(case["output"][name]) == before.shape]
    noise = max([*errors, float(np.linalg.norm(ran - before)),
                 float(np.linalg.norm(missed - np.sum(missed * unit) * unit))])
    ratio = size / noise if noise > 0 else (_CLEAN if noise == 0 else 0.0)  # NaN noise: nothing is measurable
    return {"source_change": size / scale, "gain": float(np.sum(artifact * source)) / size ** 2,
            "artifact_change": float(np.linalg.norm(artifact)) / size,
            "signal_to_noise": min(ratio, _CLEAN) if np.isfinite(ratio) else 0.0,
            # over many values, noise hardly projects on one direction: a nil response shows even so
            "detectable": bool(min(ratio, _CLEAN) * np.sqrt(source.size) >= _MEASURABLE), "shape_changed": False}


def _judged(how: str, changes: dict[str, dict], limit: float | None, moved: bool) -> dict:
    """Every output is judged; the first that fails (an ignored one first) or else the best measured
    one is the entry's `output`."""
    entry = {"how": how, "outputs": changes, "ignored_by_source": not moved, "output": None, "error": None,
             "limit": limit, "allowance": None, "ignored": False, "measured": False, "passed": None}
    for change in changes.values():
        change["ignored"] = bool(not change["shape_changed"] and change["artifact_change"] < _IGNORED and change["detectable"])
        change["measured"] = change["signal_to_noise"] >= _MEASURABLE
        change["allowance"] = min(2.0 / change["signal_to_noise"], max(0.0, (1.0 - limit) / 2)) \
            if change["measured"] and limit is not None else None
        change["error"] = abs(1.0 - change["gain"]) if change["gain"] is not None else None
        change["passed"] = False if change["ignored"] else \
            (change["error"] <= limit + change["allowance"] if change["allowance"] is not None else None)
    if not changes:
        return entry
    decisive = next((name for name, c in changes.items() if c["ignored"]), None) or \
        next((name for name, c in changes.items() if c["passed"] is False), None) or \
        max(changes, key=lambda name: changes[name]["signal_to_noise"])
    chosen = changes[decisive]
    verdicts = [c["passed"] for c in changes.values() if c["passed"] is not None]
    entry.update(output=decisive, error=chosen["error"], allowance=chosen["allowance"], ignored=chosen["ignored"],
                 measured=chosen["measured"], passed=all(verdicts) if verdicts else None)
    return entry


def _is_float(array: np.ndarray) -> bool:
    return np.asarray(array).dtype.kind == "f"

