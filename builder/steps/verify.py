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
from builder.sensitivity import failure_text, responses, uninformative, unmeasured_text
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
    settings = load_settings(inputs["compiled"])
    model, proxied, pending = _loaded(backend, inputs["compiled"], settings, target)
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
        if lossiest([target["precision"], level]) != target["precision"]:  # below what the target asked for
            warnings.append(f"this CPU computes {target['name']} in {compute['words']}, a lower precision than the "
                            f"target's {target['precision']}: verified at the {level} limits")
    found, described = load_reference(inputs["reference"])
    names = described["outputs"]
    actual = _answers(ctx, model, found, names, out)
    classes = class_outputs(verify["class_scores"], found)
    outputs = {}
    for name in names:
        metrics = compare([case["output"][name] for case in found], [result[name] for result in actual], name in classes)
        outputs[name] = {"metrics": metrics, "checks": judge(metrics, tolerance)}
    allowed = verify["allow_uninformative"]
    responded = responses(found, actual, described, tolerance.get("max_sensitivity_error"), allowed)
    uninformed = uninformative(found, described, allowed)
    if set(names) - set(allowed):
        uninformed.update({name: f"changes no output ({entry['how']})" for name, entry in responded.items()
                           if entry["ignored_by_source"] and name not in allowed})
    warnings += [unmeasured_text(name, entry) for name, entry in responded.items()
                 if entry["output"] and not entry["ignored"] and not entry["measured"]]
    warnings += [f"input '{name}' was not perturbed: its verification values leave no change to make (a constant, "
                 "a mask with one real position, ids of a one-value range); the artifact's response to it is not "
                 "checked" for name in described["inputs"] if name not in responded]
    if described["section"] == "calibration" and level == "int8":
        warnings.append("verified on the calibration data, to which int8 fitted its ranges: declare evaluation data "
                        "or verify.source for an out-of-sample check")
    first = _latency_feeds(found, ctx.config["model"])
    batch = len(next(iter(first.values())))
    # A proxy's speed is not the target's: no figure rather than a wrong one.
    latency = {"measured": False, "why": _unmeasured(proxied)} if proxied else \
        measure(lambda: model.run(first), verify["latency"], batch, ctx.progress)
    evaluation = evaluate_artifact(ctx, inputs["reference"], lambda feeds: run_case(model, feeds, names))
    failures = _failures(uninformed, described, outputs, responded, evaluation)
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
        "sensitivity": responded,
        "tolerance": tolerance,
        "outputs": outputs,
        "evaluation": evaluation,
        "uninformative": uninformed,
        "failures": failures,
        "warnings": warnings,
        # Where the backend's runtime cannot run here: what ran instead, and the checks left for the target.
        "proxy": {"runtime": backend.proxy, "model_file": settings["proxy"]["model_file"], "why": proxied} if proxied else None,
        "pending": pending,
    }
    (out / VERDICT_FILE).write_text(json.dumps(verdict, indent=2, sort_keys=True))
    (out / REPORT_FILE).write_text(json.dumps({**verdict, "latency": latency}, indent=2, sort_keys=True))
    _gate(failures, uninformed, responded, evaluation, level, backend)


def _answers(ctx, model, found: list[dict], names: list[str], out: Path) -> list[dict]:
    """The artifact's outputs for each case, also saved: serve.py --selftest compares with them."""
    actual = []
    for index, case in enumerate(found):
        ctx.progress(f"accuracy: case {index + 1}/{len(found)}")
        actual.append(run_case(model, case["input"], names))
    with open(out / OUTPUTS_FILE, "wb") as handle:
        np.savez(handle, **{f"{index}/artifact/{name}": result[name] for index, result in enumerate(actual) for name in names})
    return actual


def _failures(uninformed: dict, described: dict, outputs: dict, responded: dict, evaluation: dict | None) -> list[str]:
    failures = [f"the source model's {'input' if name in described['inputs'] else 'output'} '{name}' {why}: "
                "comparing with it proves nothing" for name, why in uninformed.items()]
    failures += [_failure_text(name, check) for name, result in outputs.items()
                 for check in result["checks"] if not check["passed"]]
    failures += [failure_text(name, entry) for name, entry in responded.items() if entry["passed"] is False]
    if evaluation and not evaluation["passed"]:
        failures.append(f"{evaluation['metric']} on the labelled set fell from {evaluation['source_score']:.2f} to "
                        f"{evaluation['artifact_score']:.2f} ({evaluation['drop']:.2f} points > evaluation.max_drop "
                        f"{evaluation['max_drop']:g})")
    return failures


def _loaded(backend, compiled: Path, settings: dict, target: dict):
    """(model, why a proxy runs it | None, checks pending on the target) as the artifact will load it."""
    try:
        return backend.load_here(compiled, settings)
    except getattr(backend.runtime(), "UnsupportedPrecision", ()) as exc:  # a runtime choosing its arithmetic may refuse
        raise MdbuildError(f"target {target['name']}: {first_line(exc)}", "target.precision",
                           f"build another precision of {backend.name} (choose one of: {', '.join(backend.precisions)})") from exc


def _gate(failures: list[str], uninformed: dict, responded: dict, evaluation: dict | None, level: str, backend) -> None:
    if uninformed:
        raise GateFailed("verification failed: " + "; ".join(failures), "verify.allow_uninformative",
                         "give the model trained weights (model.weights) or an initialisation whose outputs depend on "
                         "its inputs; list the output or input in verify.allow_uninformative only if that is expected")
    if failures:
        where = "evaluation.max_drop" if evaluation and not evaluation["passed"] else f"verify.tolerances.{level}"
        ignored = any(entry["ignored"] for entry in responded.values())
        advice = ["keep the input's path in float (quantization.keep_masks_float=true, quantization.exclude)"
                  if ignored and level == "int8" else None,
                  backend.advice.get(level), _ADVICE.get(level, f"loosen verify.tolerances.{level} only if this loss is acceptable")]
        raise GateFailed("verification failed: " + "; ".join(failures), where, "; ".join(filter(None, advice)))


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


def _failure_text(output: str, check: dict) -> str:
    if check["metric"] == "finite":
        return f"output '{output}' has NaN or Inf values"
    value, limit = check["value"], check["limit"]
    if check["tolerance"].startswith("max"):
        excess = f"{value / limit:.3g}x the limit" if limit > 0 else f"{value:.3g} over"
        return f"output '{output}' {check['metric']} = {value:.4g} > {check['tolerance']} {limit:.4g} ({excess})"
    return f"output '{output}' {check['metric']} = {value:.4g} < {check['tolerance']} {limit:.4g} ({limit - value:.3g} short)"
