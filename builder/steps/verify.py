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
from builder.latency import measure
from builder.serving.accuracy import compare, judge
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
            "verify.allow_uninformative"]
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
    if compute:
        ctx.progress(f"computing in {compute['words']}")
    feeds, expected = load_reference(inputs["reference"])
    uninformative = _uninformative(expected, verify["allow_uninformative"])
    count = len(next(iter(feeds.values())))
    actual: dict[str, list[np.ndarray]] = {name: [] for name in expected}
    for index in range(count):
        ctx.progress(f"accuracy: sample {index + 1}/{count}")
        result = model.run({name: value[index] for name, value in feeds.items()}, list(expected))
        for name in expected:
            actual[name].append(result[name])
    with open(out / OUTPUTS_FILE, "wb") as handle:  # the artifact's own answers: serve.py --selftest compares with them
        np.savez(handle, **{name: np.stack(values) for name, values in actual.items()})
    outputs = {}
    for name, reference in expected.items():
        metrics = compare(reference, np.stack(actual[name]))
        outputs[name] = {"metrics": metrics, "checks": judge(metrics, tolerance)}
    first = {name: value[0] for name, value in feeds.items()}
    batch = _batch_size(ctx)
    # A proxy's speed is not the target's: no figure rather than a wrong one.
    latency = {"measured": False, "why": _unmeasured(proxied)} if proxied else \
        measure(lambda: model.run(first), verify["latency"], batch, ctx.progress)
    failures = [f"the source model's output '{name}' {why}: comparing with it proves nothing"
                for name, why in uninformative.items()]
    failures += [_failure_text(name, check) for name, result in outputs.items()
                 for check in result["checks"] if not check["passed"]]
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
        "samples": count,
        "tolerance": tolerance,
        "outputs": outputs,
        "evaluation": evaluation,
        "uninformative": uninformative,
        "failures": failures,
        # Where the backend's runtime cannot run here: what ran instead, and the checks left for the target.
        "proxy": {"runtime": backend.proxy, "model_file": settings["proxy"]["model_file"], "why": proxied} if proxied else None,
        "pending": pending,
    }
    (out / VERDICT_FILE).write_text(json.dumps(verdict, indent=2, sort_keys=True))
    (out / REPORT_FILE).write_text(json.dumps({**verdict, "latency": latency}, indent=2, sort_keys=True))
    if uninformative:
        raise GateFailed("verification failed: " + "; ".join(failures), "verify.allow_uninformative",
                         "give the model trained weights (model.weights) or an initialisation whose outputs depend on "
                         "its inputs; list the output in verify.allow_uninformative only if that is expected")
    if failures:
        where = "evaluation.max_drop" if evaluation and not evaluation["passed"] else f"verify.tolerances.{level}"
        advice = [backend.advice.get(level), _ADVICE.get(level, f"loosen verify.tolerances.{level} only if this loss is acceptable")]
        raise GateFailed("verification failed: " + "; ".join(failures), where, "; ".join(filter(None, advice)))


# A source output whose largest magnitude, or whose spread over the samples relative to it, is at most
# this carries no information a comparison could test (measured: torchvision's ViT with its zero-initialised
# head gives exactly 0, efficientnet_b0 at most 3.6e-14, mobilenet_v3_small 2.0e-9; deeplabv3 the same
# output for every input).
_UNINFORMATIVE = 1e-6


def _uninformative(expected: dict[str, np.ndarray], allowed: list[str]) -> dict[str, str]:
    """{output: why} for float outputs of the source model that are (near) zero on every sample or the
    same for every sample: an artifact could ignore its inputs and still match them."""
    found = {}
    for name, values in expected.items():
        if name in allowed or values.dtype.kind != "f":
            continue
        values = values.astype(np.float64)
        largest = float(np.abs(values).max()) if values.size else 0.0
        if largest <= _UNINFORMATIVE:
            found[name] = f"is (near) zero on every verification input (largest magnitude {largest:.3g})"
        elif len(values) > 1 and float(np.abs(values - values[0]).max()) <= _UNINFORMATIVE * largest:
            found[name] = f"is the same for every one of the {len(values)} verification inputs"
    return found


def _unmeasured(why: str) -> str:
    return "not measured: no GPU" if why.startswith("no NVIDIA GPU") else f"not measured: {why}"


def _limits_by_compute(compute: dict | None, stored: str, tolerances: dict) -> dict | None:
    """The limits for each precision the runtime may choose on another CPU, for serve.py --selftest
    there (an fp16 artifact built here in float32 computes in float16 on a CPU with f16 arithmetic)."""
    if not compute:
        return None
    levels = {precision: lossiest([stored, precision]) for precision in compute["requested"]}
    return {precision: {"level": level, **tolerances[level]} for precision, level in levels.items()}


def _batch_size(ctx) -> int:
    model = ctx.config["model"]
    first = model["inputs"][0]["shape"]
    if first and isinstance(first[0], str):
        return int(model["dims"].get(first[0], 1))
    return int(first[0]) if first else 1


def _failure_text(output: str, check: dict) -> str:
    if check["metric"] == "finite":
        return f"output '{output}' has NaN or Inf values"
    value, limit = check["value"], check["limit"]
    if check["tolerance"].startswith("max"):
        excess = f"{value / limit:.3g}x the limit" if limit > 0 else f"{value:.3g} over"
        return f"output '{output}' {check['metric']} = {value:.4g} > {check['tolerance']} {limit:.4g} ({excess})"
    return f"output '{output}' {check['metric']} = {value:.4g} < {check['tolerance']} {limit:.4g} ({limit - value:.3g} short)"
