"""Accuracy-controlled int8 of an ONNX graph with Q/DQ (quantization.accuracy_control, for ort_quantize and
trt_quantize): quantize, and while the int8 limits (verify.tolerances.int8) do not hold on the calibration
set, return the nodes whose quantization loses most to float: the first 1, 3, 7, ... of them, then the
fewest between the last count that failed and the first that held (bisection).

A node's loss is the largest of its quantized inputs': for an activation, quantize-dequantize with the
scale the first round chose, over the calibration set; for a weight, its int8 copy against the float
one; each as the mean over channels of the channel's relative error (an outlier channel a thousand
times the others dominates a relative error of the whole tensor, while its scale rounds the others to
zero). Measuring each node's return to float by running an edited graph was tried: on
all-MiniLM-L6-v2 one node's return hardly moves an error that all the others make, the ranking was
noise, and 127 nodes in float still failed where this ranking held with 89."""

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
    if not order:
        raise GateFailed(f"accuracy control found no quantized node to rank, and the int8 limits fail on the "
                         f"calibration set: {failing[0]['metric']} {failing[0]['value']:.4g}",
                         "quantization.accuracy_control", "build an fp16 or fp32 target")
    failed, held = 0, 1
    while not holds(held):
        if held == len(order):
            raise GateFailed(f"accuracy control returned every quantized node to float ({held}) and the int8 limits "
                             f"still fail on the calibration set: {failing[0]['metric']} {failing[0]['value']:.4g}",
                             "quantization.accuracy_control", "build an fp16 or fp32 target")
        failed, held = held, min(2 * held + 1, len(order))
    while held - failed > 1:
        middle = (failed + held) // 2
        failed, held = (failed, middle) if holds(middle) else (middle, held)
    if written != held:
        holds(held)
    import onnx

    if not quantization.activation_pairs(onnx.load(str(output)).graph):  # nodes between float ones lose theirs too
        raise GateFailed(f"the int8 limits hold only with every quantized activation back in float ({held} nodes "
                         "returned): this is no longer an int8 model", "quantization.accuracy_control",
                         "build an fp16 or fp32 target, or loosen verify.tolerances.int8")
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
            slacks.append((value - limit) / (1 - limit) if limit < 1 else (1.0 if value >= limit else -1.0))
        else:
            slacks.append(1 - value / limit if limit > 0 else (1.0 if value <= limit else -1.0))
    return float(min(slacks, default=1.0))


def _checks(reference: list[dict], actual: list[dict], limits: dict[str, Any]) -> list[dict]:
    checks = []
    for name in reference[0]:
        metrics = compare([r[name] for r in reference], [a[name] for a in actual])
        checks += judge(metrics, {key: limits.get(key) for key in BUDGET})
    return checks


def _outputs(path: str, samples: list[dict]) -> list[dict]:
    run = _runner(path)
    return [run(sample) for sample in samples]


def _runner(path: str, extra: list[str] | None = None) -> Callable[[dict], dict]:
    """Runs the model at `path` on one sample: {output: array}, `extra` tensors exposed as outputs too."""
    import onnxruntime

    source: Any = path
    if extra:
        import onnx

        model = onnx.load(path)
        known = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in extra if name not in known)
        source = model.SerializeToString()
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda sample: dict(zip(names, session.run(names, sample)))


def _ranked(prepared: Path, quantized: Path, samples: list[dict]) -> list[str]:
    """The nodes by what quantizing their inputs loses, the most first (the module's docstring)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(quantized)).graph
    pgraph = onnx.load(str(prepared)).graph
    produced = {name for node in pgraph.node for name in node.output} | {i.name for i in pgraph.input}
    floats = {t.name: numpy_helper.to_array(t) for t in pgraph.initializer}
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    dequantizers = {node.output[0]: node for node in graph.node if node.op_type == "DequantizeLinear"}
    activations = quantization.activation_pairs(graph)
    loss: dict[str, float] = {}  # a quantized input tensor (its dequantized name): what quantizing it loses
    readers: dict[str, list[str]] = {}
    tensors: dict[str, str] = {}  # activation input: its float tensor in the prepared graph
    for node in graph.node:
        if not node.name or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for name in node.input:
            if name in activations:
                quantizer = activations[name]
                # ONNX Runtime renames a quantized graph output's producer output (`<y>_QuantizeLinear_Input`)
                # and gives its dequantized copy the original name: the prepared graph knows that one.
                source = quantizer.input[0] if quantizer.input[0] in produced else name
                if source in produced and quantizer.input[1] in values:  # else a scale computed in the graph
                    tensors[name] = source
                    readers.setdefault(name, []).append(node.name)
            elif name in dequantizers:  # a weight: ONNX Runtime stores w as w_quantized
                dq = dequantizers[name]
                original = dq.input[0].removesuffix("_quantized")
                if original in floats and dq.input[0] in values and dq.input[1] in values:
                    loss[name] = _channel_loss(floats[original], _dequantized(dq, values))
                    readers.setdefault(name, []).append(node.name)
    run = _runner(str(prepared), sorted(set(tensors.values())))
    errors = {name: 0.0 for name in tensors}
    for sample in samples:  # one sample's activations at a time
        found = run(sample)
        for name, source in tensors.items():
            x = np.asarray(found[source], np.float64)
            quantizer = activations[name]
            errors[name] = max(errors[name], _channel_loss(x, _fake_quantized(x, quantizer, values)))
    loss.update(errors)
    loss = {name: value if np.isfinite(value) else np.inf for name, value in loss.items()}
    order: list[str] = []
    for name in sorted(loss, key=loss.get, reverse=True):
        order += [reader for reader in readers[name] if reader not in order]
    return order


def _channel_loss(x: np.ndarray, rounded: np.ndarray) -> float:
    """The mean over channels of each channel's relative error (axis 1 of an image tensor, else the
    last): an outlier channel a thousand times the others dominates a tensor's norm, and its scale
    rounds the others away unseen by a relative error of the whole."""
    axis = 1 if x.ndim == 4 else x.ndim - 1
    if x.ndim == 0:
        x, rounded, axis = x.reshape(1), rounded.reshape(1), 0
    moved = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    error = np.linalg.norm(moved - np.moveaxis(rounded, axis, 0).reshape(x.shape[axis], -1), axis=1)
    size = np.linalg.norm(moved, axis=1)
    used = size > 0
    return float(np.mean(error[used] / size[used])) if used.any() else 0.0


def _fake_quantized(x: np.ndarray, quantizer, values: dict[str, np.ndarray]) -> np.ndarray:
    """x through an activation's quantize-dequantize (a scale not finite and positive loses everything)."""
    scale = float(values[quantizer.input[1]].ravel()[0])
    if not np.isfinite(scale) or scale <= 0:
        return np.full_like(x, np.nan)
    zero = values.get(quantizer.input[2]) if len(quantizer.input) > 2 else None
    low, high = (-128, 127) if zero is not None and zero.dtype == np.int8 else (0, 255)
    point = float(zero.ravel()[0]) if zero is not None else 0.0
    return (np.clip(np.round(x / scale + point), low, high) - point) * scale


def _dequantized(dq, values: dict[str, np.ndarray]) -> np.ndarray:
    """A weight's DequantizeLinear computed: (q - zero point) x scale, per channel along its axis."""
    q = values[dq.input[0]].astype(np.float64)
    scale = values[dq.input[1]].astype(np.float64)
    zero = values[dq.input[2]].astype(np.float64) if len(dq.input) > 2 and dq.input[2] in values else np.zeros_like(scale)
    if scale.ndim == 1 and scale.size > 1:
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q - zero) * scale
