"""Accuracy-controlled int8 of an ONNX graph with Q/DQ (quantization.accuracy_control, for ort_quantize and
trt_quantize): quantize, and while the int8 limits (verify.tolerances.int8) do not hold on the calibration
set, return the nodes whose quantization loses most to float, in rounds of 1, 2, 4, ... nodes.

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
    """Quantizes with `quantize(kept)` into `output` until the limits hold; what it did, for the summary."""
    reference = _outputs(str(prepared), samples)
    kept, returned, ranked, chunk, rounds = dict(kept), [], None, 1, 0
    while True:
        rounds += 1
        quantize(kept)
        checks = _checks(reference, _outputs(str(output), samples), limits)
        failing = [c for c in checks if not c["passed"]]
        progress(f"accuracy control round {rounds}: {len(returned)} nodes returned to float; "
                 + (", ".join(f"{c['metric']} {c['value']:.4g} (limit {c['limit']:g})" for c in failing) or "within limits"))
        if not failing:
            return {"accuracy_control": True, "rounds": rounds, "returned_to_float": len(returned),
                    "returned_first": ", ".join(returned[:5])}
        if ranked is None:
            ranked = _ranked(prepared, output, samples)
        remaining = [name for name in ranked if name not in kept]
        if not remaining:
            raise GateFailed(f"accuracy control returned every quantized node to float ({len(returned)}) and the int8 "
                             f"limits still fail on the calibration set: {failing[0]['metric']} {failing[0]['value']:.4g}",
                             "quantization.accuracy_control", "build an fp16 or fp32 target")
        for name in remaining[:chunk]:
            kept[name] = "accuracy control"
            returned.append(name)
        chunk *= 2


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
    quantized_by = {node.output[0]: node for node in qgraph.node
                    if node.op_type == "QuantizeLinear" and node.input[0] not in values and node.input[1] in values}
    restored_from = {node.output[0]: quantized_by[node.input[0]] for node in qgraph.node
                     if node.op_type == "DequantizeLinear" and node.input[0] in quantized_by}
    readers: dict[str, list[str]] = {}
    for node in qgraph.node:
        for name in node.input:
            if name in restored_from and node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                readers.setdefault(restored_from[name].input[0], []).append(node.name)
    float_values = _outputs(str(prepared), samples, sorted(readers))
    loss = {}
    for tensor in readers:
        node = next(q for q in quantized_by.values() if q.input[0] == tensor)
        scale = float(values[node.input[1]].ravel()[0])
        zero = values.get(node.input[2]) if len(node.input) > 2 else None
        x = np.concatenate([np.asarray(sample[tensor], np.float64).ravel() for sample in float_values])
        if not np.isfinite(scale) or scale <= 0:
            loss[tensor] = np.inf
            continue
        low, high = (-128, 127) if zero is not None and zero.dtype == np.int8 else (0, 255)
        point = float(zero.ravel()[0]) if zero is not None else 0.0
        restored = (np.clip(np.round(x / scale + point), low, high) - point) * scale
        loss[tensor] = float(np.linalg.norm(x - restored) / (np.linalg.norm(x) or 1.0))
    order: list[str] = []
    for tensor in sorted(loss, key=loss.get, reverse=True):
        order += [name for name in readers[tensor] if name not in order]
    return order
