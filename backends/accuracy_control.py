"""Accuracy-controlled int8 of an ONNX graph with Q/DQ (quantization.accuracy_control, for ort_quantize and
trt_quantize): quantize, and while the int8 limits (verify.tolerances.int8) do not hold on the calibration
set, return the nodes whose quantization loses most to float: the first 1, 3, 7, ... of them, then the
fewest between the last count that failed and the first that held (bisection).

A node's loss is the relative error that quantizing an activation it reads costs on its own (|x -
qdq(x)| / |x| over the calibration set, with the scale and zero point the first round chose)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from backends import quantization
from builder.errors import GateFailed
from builder.serving.accuracy import compare, judge
from builder.steps.calibration import batches


# The int8 limits accuracy control holds the quantized graph to (verify.tolerances.int8.<key>).
BUDGET = ("max_rel_l2", "min_cosine", "max_abs")


def quantize_within_limits(quantize: Callable[[dict[str, str]], None], prepared: Path, output: Path,
                           found: list[dict], kept: dict[str, str], config: dict[str, Any], progress) -> dict[str, Any]:
    """`quantize(nodes to keep in float)` writes `output`; the nodes kept read float tensors; with
    quantization.accuracy_control, in rounds until the int8 limits hold. The facts for the step's summary."""

    def once(excluded: dict[str, str]) -> None:
        quantize(excluded)
        quantization.float_inputs(output, excluded)

    if not config["quantization"]["accuracy_control"]:
        once(kept)
        return {}
    return _controlled(once, prepared, output, list(batches(found)), kept, config["verify"]["tolerances"]["int8"], progress)


def _controlled(quantize: Callable[[dict[str, str]], None], prepared: Path, output: Path, samples: list[dict],
                kept: dict[str, str], limits: dict[str, Any], progress) -> dict[str, Any]:
    """Quantizes with `quantize(kept)` into `output` until the limits hold; what it did, for the summary.
    Returns the first 1, 3, 7, ... nodes of the ranking to float until the limits hold, then bisects
    between the last count that failed and the first that held: the fewest nodes in float that hold."""
    reference = _outputs(str(prepared), samples)
    order: list[str] = []
    rounds, written, failing = 0, None, []

    def holds(count: int) -> bool:
        nonlocal rounds, written, failing
        rounds, written = rounds + 1, count
        quantize({**kept, **{name: "accuracy control" for name in order[:count]}})
        failing = [c for c in _checks(reference, _outputs(str(output), samples), limits) if not c["passed"]]
        progress(f"accuracy control round {rounds}: {count} nodes returned to float; "
                 + (", ".join(f"{c['metric']} {c['value']:.4g} (limit {c['limit']:g})" for c in failing) or "within limits"))
        return not failing

    if holds(0):
        return {"accuracy_control": True, "rounds": rounds, "returned_to_float": 0}
    order = [name for name in _ranked(prepared, output, samples) if name not in kept]
    failed, held = 0, 1
    while not order or not holds(held):
        if held >= len(order):
            raise GateFailed(f"accuracy control returned every quantized node to float ({len(order)}) and the int8 "
                             f"limits still fail on the calibration set: {failing[0]['metric']} {failing[0]['value']:.4g}",
                             "quantization.accuracy_control", "build an fp16 or fp32 target")
        failed, held = held, min(2 * held + 1, len(order))
    while held - failed > 1:
        middle = (failed + held) // 2
        failed, held = (failed, middle) if holds(middle) else (middle, held)
    if written != held:
        holds(held)
    return {"accuracy_control": True, "rounds": rounds, "returned_to_float": held, "returned_first": ", ".join(order[:held][:5])}

def margin(reference: list[dict], actual: list[dict], limits: dict[str, Any]) -> float:
    """How far inside the int8 limits `actual` stays: 1 for the reference's own outputs, 0 at the nearest
    limit, below 0 past it (each limit's slack over its range: limit - value over limit for an error,
    value - limit over 1 - limit for a similarity)."""
    slacks = []
    for check in _checks(reference, actual, limits):
        value, limit = check["value"], check["limit"]
        if check["metric"] == "finite" or not np.isfinite(value):
            return -1e6
        if check["tolerance"].startswith("min_"):
            slacks.append((value - limit) / (1 - limit) if limit < 1 else value - limit)
        else:
            slacks.append(1 - value / limit if limit > 0 else -value)
    return float(min(slacks, default=1.0))


def _checks(reference: list[dict], actual: list[dict], limits: dict[str, Any]) -> list[dict]:
    checks = []
    for name in reference[0]:
        metrics = compare([r[name] for r in reference], [a[name] for a in actual])
        checks += judge(metrics, {key: limits.get(key) for key in BUDGET})
    return checks


def _outputs(path: str, samples: list[dict], extra: list[str] | None = None) -> list[dict]:
    import onnxruntime

    if extra:
        import onnx

        model = onnx.load(path)
        known = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in extra if name not in known)
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    else:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, sample))) for sample in samples]


def _ranked(prepared: Path, quantized: Path, samples: list[dict]) -> list[str]:
    """The nodes whose quantized input activations lose most, the worst first."""
    import onnx
    from onnx import numpy_helper

    qgraph = onnx.load(str(quantized)).graph
    values = {t.name: numpy_helper.to_array(t) for t in qgraph.initializer}
    quantizer_of: dict[str, Any] = {}  # activation tensor: its QuantizeLinear node
    readers: dict[str, list[str]] = {}
    restored = quantization.activation_pairs(qgraph)
    for node in qgraph.node:
        for name in node.input:
            if name in restored and node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                tensor = restored[name].input[0]
                quantizer_of[tensor] = restored[name]
                readers.setdefault(tensor, []).append(node.name)
    float_values = _outputs(str(prepared), samples, sorted(readers))
    loss = {}
    for tensor in readers:
        node = quantizer_of[tensor]
        if node.input[1] not in values:  # a scale computed in the graph: its loss is not known here
            continue
        scale = float(values[node.input[1]].ravel()[0])
        zero = values.get(node.input[2]) if len(node.input) > 2 else None
        x = np.concatenate([np.asarray(sample[tensor], np.float64).ravel() for sample in float_values])
        if not np.isfinite(scale) or scale <= 0:
            loss[tensor] = np.inf
            continue
        low, high = (-128, 127) if zero is not None and zero.dtype == np.int8 else (0, 255)
        point = float(zero.ravel()[0]) if zero is not None else 0.0
        rounded = (np.clip(np.round(x / scale + point), low, high) - point) * scale
        loss[tensor] = float(np.linalg.norm(x - rounded) / (np.linalg.norm(x) or 1.0))
    order: list[str] = []
    for tensor in sorted(loss, key=loss.get, reverse=True):
        order += [name for name in readers[tensor] if name not in order]
    return order
