"""Run the compiled model the way serve.py will, compare it with the reference outputs, measure
latency, and fail the build when a gated metric is outside its tolerance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from backends import get_backend
from builder.errors import GateFailed, MdbuildError, first_line
from builder.evaluation import evaluate_artifact
from builder.inputs import batch_dim
from builder.latency import measure
from builder.serving.accuracy import compare, is_class_scores, judge, run_case
from builder.steps import REPORT_FILE
from builder.steps.compile import load_settings
from builder.steps.reference import load_reference
from builder.optimize import lossiest

OUTPUTS_FILE = "outputs.npz"
# The verdict: everything the report says but latency. Determined by the compiled model, the reference
# and the limits, it is part of the output (the package step writes it into the manifest).
VERDICT_FILE = "verification.json"

# What to try when a level's limits are broken; a backend puts its own advice first (Backend.advice).
_ADVICE = {
    "fp32": "try another model.opset or model.exporter, and loosen verify.tolerances.fp32 only if the difference "
            "is expected",
    "fp16": "build an fp32 target, or loosen verify.tolerances.fp16 if this loss is acceptable",
    "bf16": "build an fp32 or fp16 target (bfloat16 keeps 8 bits of mantissa), or loosen verify.tolerances.bf16 "
            "if this loss is acceptable",
    "int8": "calibrate on more representative data (calibration.*), or build an fp16/fp32 target",
    "pruned": "lower prune.amount, or fine-tune the pruned model and point model.weights at it",
}


def reads(config: dict[str, Any], levels: list[str]) -> list[str]:
    """`levels`: the tolerance levels this build may use (what it stores, and what its runtime may
    compute in)."""
    keys = ["target.name", "target.backend", "target.precision", "model.inputs", "model.dims", "verify.latency",
            "verify.allow_uninformative", "verify.class_scores"]
    keys += [f"verify.tolerances.{level}" for level in levels]
    return keys + (["evaluation.max_drop"] if config["evaluation"]["source"] else [])


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    target, verify = ctx.config["target"], ctx.config["verify"]
    backend = get_backend(target["backend"])
    runtime = backend.runtime()
    settings = load_settings(inputs["compiled"])
    try:
        model, proxied, pending = backend.load_here(inputs["compiled"], settings)
    except getattr(runtime, "UnsupportedPrecision", ()) as exc:  # a runtime that chooses its arithmetic may refuse
        raise MdbuildError(f"target {target['name']}: {first_line(exc)}", "target.precision",
                           f"build another precision of {backend.name} (choose one of: {', '.join(backend.precisions)})") from exc
    if proxied:
        ctx.progress(f"{proxied}: verifying the graph the engine computes on ONNX Runtime CPU")
    # What the runtime really computes in on this CPU (OpenVINO says; the others run the graph's types).
    compute = getattr(model, "compute", None)
    stored = ctx.config["level"]
    level = lossiest([stored, compute["precision"]]) if compute else stored
    tolerance = verify["tolerances"][level]
    warnings = []
    if compute:
        ctx.progress(f"computing in {compute['words']}")
        if level != stored:
            warnings.append(f"this CPU computes {target['name']} in {compute['words']}, a lower precision than the "
                            f"target's {target['precision']}: verified at the {level} limits")
    found, described = load_reference(inputs["reference"])
    names = described["outputs"]
    uninformative = _uninformative(found, described, verify["allow_uninformative"])
    actual = []
    for index, case in enumerate(found):
        ctx.progress(f"accuracy: case {index + 1}/{len(found)}")
        actual.append(run_case(model, case["input"], names))
    with open(out / OUTPUTS_FILE, "wb") as handle:  # the artifact's own answers: serve.py --selftest compares with them
        np.savez(handle, **{f"{index}/artifact/{name}": result[name] for index, result in enumerate(actual) for name in names})
    classes = class_outputs(ctx.config["verify"]["class_scores"], found)
    outputs = {}
    for name in names:
        metrics = compare([case["output"][name] for case in found], [result[name] for result in actual], name in classes)
        outputs[name] = {"metrics": metrics, "checks": judge(metrics, tolerance)}
    sensitivity = input_sensitivity(found, actual, described, tolerance.get("max_sensitivity_error"),
                                    verify["allow_uninformative"])
    uninformative.update({name: f"changes no output ({entry['how']})" for name, entry in sensitivity.items()
                          if entry["ignored_by_source"] and name not in verify["allow_uninformative"]
                          and set(names) - set(verify["allow_uninformative"])})
    first = _latency_feeds(found, ctx.config["model"])
    batch = len(next(iter(first.values())))
    # A proxy's speed is not the target's: no figure rather than a wrong one.
    latency = {"measured": False, "why": _unmeasured(proxied)} if proxied else \
        measure(lambda: model.run(first), verify["latency"], batch, ctx.progress)
    failures = [f"the source model's {'input' if name in described['inputs'] else 'output'} '{name}' {why}: "
                "comparing with it proves nothing" for name, why in uninformative.items()]
    failures += [_failure_text(name, check) for name, result in outputs.items()
                 for check in result["checks"] if not check["passed"]]
    failures += [_sensitivity_text(name, entry) for name, entry in sensitivity.items() if entry["passed"] is False]
    evaluation = evaluate_artifact(ctx, inputs["reference"], model.run)
    if evaluation and not evaluation["passed"]:
        failures.append(f"{evaluation['metric']} on the labelled set fell from {evaluation['source_score']:.2f} to "
                        f"{evaluation['artifact_score']:.2f} ({evaluation['drop']:.2f} points > evaluation.max_drop "
                        f"{evaluation['max_drop']:g})")
    verdict = {
        "passed": not failures,
        "target": target["name"],
        "backend": backend.name,
        "precision": target["precision"],
        "tolerance_level": level,
        "compute": compute,
        "limits_by_compute": _limits_by_compute(compute, stored, verify["tolerances"]),
        "samples": described["samples"],
        "cases": [case["name"] for case in described["cases"]],
        "data": described["data"],
        "sensitivity": sensitivity,
        "tolerance": tolerance,
        "outputs": outputs,
        "evaluation": evaluation,
        "uninformative": uninformative,
        "failures": failures,
        "warnings": warnings,
        # Where the backend's runtime cannot run here: what ran instead, and the checks left for the target.
        "proxy": {"runtime": backend.proxy, "model_file": settings["proxy"]["model_file"], "why": proxied} if proxied else None,
        "pending": pending,
    }
    (out / VERDICT_FILE).write_text(json.dumps(verdict, indent=2, sort_keys=True))
    (out / REPORT_FILE).write_text(json.dumps({**verdict, "latency": latency}, indent=2, sort_keys=True))
    if uninformative:
        raise GateFailed("verification failed: " + "; ".join(failures), "verify.allow_uninformative",
                         "give the model trained weights (model.weights) or an initialisation whose outputs depend on "
                         "its inputs; list the output or input in verify.allow_uninformative only if that is expected")
    if failures:
        where = "evaluation.max_drop" if evaluation and not evaluation["passed"] else f"verify.tolerances.{level}"
        advice = [backend.advice.get(level), _ADVICE.get(level, f"loosen verify.tolerances.{level} only if this loss is acceptable")]
        raise GateFailed("verification failed: " + "; ".join(failures), where, "; ".join(filter(None, advice)))


# A source output whose largest magnitude, or whose spread over the samples relative to it, is at most
# this carries no information a comparison could test (measured: torchvision's ViT with its zero-initialised
# head gives exactly 0, efficientnet_b0 at most 3.6e-14, mobilenet_v3_small 2.0e-9; deeplabv3 the same
# output for every input). The same bound tells an input the source model ignores.
_UNINFORMATIVE = 1e-6
# An artifact whose outputs change less than this fraction of the source's change ignores the input.
_IGNORED = 1e-3


def _uninformative(found: list[dict], described: dict, allowed: list[str]) -> dict[str, str]:
    """{output: why} for float outputs of the source model that are (near) zero on every case or the
    same for every sample: an artifact could ignore its inputs and still match them."""
    plain = [case for case, about in zip(found, described["cases"]) if not about["perturbs"]]
    result = {}
    for name in described["outputs"]:
        rows = [row for case in plain for row in np.asarray(case["output"][name], np.float64).reshape(
            len(case["output"][name]), -1)] if found[0]["output"][name].ndim else []
        if name in allowed or found[0]["output"][name].dtype.kind != "f" or not rows:
            continue
        largest = max(float(np.abs(row).max()) if row.size else 0.0 for row in rows)
        same = [row for row in rows if row.shape == rows[0].shape]
        if largest <= _UNINFORMATIVE:
            result[name] = f"is (near) zero on every verification input (largest magnitude {largest:.3g})"
        elif len(same) > 1 and max(float(np.abs(row - same[0]).max()) for row in same) <= _UNINFORMATIVE * largest:
            result[name] = f"is the same on all {len(same)} verification rows"
    return result


def input_sensitivity(found: list[dict], actual: list[dict], described: dict, limit: float | None,
                      allowed: list[str]) -> dict[str, dict]:
    """For each perturbed input, per output the source's change responds in: the source's change (relative
    to its output); the artifact's gain along it (<artifact change, source change> / |source change|^2: 1
    reproduces the response, 0 ignores the input); and the signal-to-noise ratio, |source change| over the
    artifact's own error on the unchanged case. The output with the best ratio decides. An artifact whose
    change is nil (under 1e-3 of the source's) ignores the input and fails whatever the noise; otherwise
    |1 - gain| may reach the limit plus 2 / signal-to-noise (a change within the artifact's own error
    cannot be measured more closely)."""
    result = {}
    for index, about in enumerate(described["cases"]):
        perturbs = about["perturbs"]
        if not perturbs:
            continue
        base, changes = perturbs["of"], {}
        for name in (output for output in described["outputs"] if output not in allowed):
            before, after = (np.asarray(found[i]["output"][name], np.float64) for i in (base, index))
            ran, ran_after = (np.asarray(actual[i][name], np.float64) for i in (base, index))
            source, artifact = after - before, ran_after - ran
            size = float(np.linalg.norm(source))
            if size > _UNINFORMATIVE * (np.linalg.norm(before) or 1.0):
                changes[name] = {"source_change": size / float(np.linalg.norm(before) or 1.0),
                                 "gain": float(np.sum(artifact * source)) / size ** 2,
                                 "artifact_change": float(np.linalg.norm(artifact)) / size,
                                 "signal_to_noise": size / (float(np.linalg.norm(ran - before)) or 1e-30)}
        decisive = max(changes, key=lambda name: changes[name]["signal_to_noise"], default=None)
        entry = {"how": perturbs["how"], "outputs": changes, "ignored_by_source": not changes, "output": decisive,
                 "error": None, "limit": limit, "allowance": None, "ignored": False, "passed": None}
        if decisive:
            chosen = changes[decisive]
            entry.update(error=abs(1.0 - chosen["gain"]), allowance=2.0 / chosen["signal_to_noise"],
                         ignored=max(c["artifact_change"] for c in changes.values()) < _IGNORED)
            if limit is not None:
                entry["passed"] = not entry["ignored"] and entry["error"] <= limit + entry["allowance"]
        result[perturbs["input"]] = entry
    return result


def _latency_feeds(found: list[dict], model: dict) -> dict[str, np.ndarray]:
    """The first case whose batch is model.dims' size of the batch dimension (latency is measured there)."""
    batch = batch_dim(model["inputs"])
    rows = model["dims"].get(batch, 1) if batch else None
    return next((case["input"] for case in found if len(next(iter(case["input"].values()))) == rows), found[0]["input"])


def class_outputs(declared: list[str] | None, found: list[dict]) -> set[str]:
    """The outputs that are class scores: verify.class_scores, else every (batch, classes) output."""
    if declared is not None:
        return set(declared)
    return {name for name, value in found[0]["output"].items() if is_class_scores(value)}


def _unmeasured(why: str) -> str:
    return "not measured: no GPU" if why.startswith("no NVIDIA GPU") else f"not measured: {why}"


def _limits_by_compute(compute: dict | None, stored: str, tolerances: dict) -> dict | None:
    """The limits for each precision the runtime may choose on another CPU, for serve.py --selftest
    there (an fp16 artifact built here in float32 computes in float16 on a CPU with f16 arithmetic)."""
    if not compute:
        return None
    levels = {precision: lossiest([stored, precision]) for precision in compute["requested"]}
    return {precision: {"level": level, **tolerances[level]} for precision, level in levels.items()}


def _sensitivity_text(name: str, entry: dict) -> str:
    chosen = entry["outputs"][entry["output"]]
    if entry["ignored"]:
        return (f"the artifact ignores input '{name}' ({entry['how']}): the source model's output "
                f"'{entry['output']}' changes by {chosen['source_change']:.3g} of itself, the artifact's by "
                f"{chosen['artifact_change'] * chosen['source_change']:.3g}")
    return (f"the artifact's response to input '{name}' ({entry['how']}) is not the source model's: output "
            f"'{entry['output']}' changes {chosen['gain']:.3g} times as much along the source's change (|1 - gain| "
            f"{entry['error']:.3g} > max_sensitivity_error {entry['limit']:g} + {entry['allowance']:.3g} for the "
            f"artifact's own error)")


def _failure_text(output: str, check: dict) -> str:
    if check["metric"] == "finite":
        return f"output '{output}' has NaN or Inf values"
    value, limit = check["value"], check["limit"]
    if check["tolerance"].startswith("max"):
        excess = f"{value / limit:.3g}x the limit" if limit > 0 else f"{value:.3g} over"
        return f"output '{output}' {check['metric']} = {value:.4g} > {check['tolerance']} {limit:.4g} ({excess})"
    return f"output '{output}' {check['metric']} = {value:.4g} < {check['tolerance']} {limit:.4g} ({limit - value:.3g} short)"
