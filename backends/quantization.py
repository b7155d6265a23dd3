"""What every int8 step shares: which nodes stay in float (quantization.exclude, and attention-mask
paths), and the check that each Q/DQ scale is a finite positive number.

A mask path holds the mask's huge negative bias (transformers add the float minimum to masked scores):
int8 cannot represent it next to the scores (ONNX Runtime wrote scale inf after BERT's mask, and the
artifacts then ignored the mask). Every node reading the mask, or a tensor computed from it, stays in
float; the taint stops after a node that squashes its input (Softmax) or reads only its shape."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, NamedTuple

from backends.onnx_graph import tensors_read
from builder.errors import MdbuildError
from builder.samples import role

# Outputs of these carry no trace of the mask's range: they squash it, read only its shape, or are a
# fused attention that applies the mask itself (ONNX, ONNX Runtime and OpenVINO operators).
_SQUASHING = {"Softmax", "LogSoftmax", "Sigmoid", "Tanh", "Shape", "ShapeOf", "Size", "SoftMax", "Attention",
              "MultiHeadAttention", "ScaledDotProductAttention"}


# A product of the mask with a computed tensor gates it (ONNX and OpenVINO names).
_GATING = {"Mul", "Multiply", "MatMul"}


class Node(NamedTuple):
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def reads(config: dict[str, Any]) -> list[str]:
    keys = ["quantization.exclude", "quantization.keep_masks_float"]
    return keys + (["model.inputs"] if config["quantization"]["keep_masks_float"] else [])


def kept_float(nodes: list[Node], config: dict[str, Any]) -> dict[str, str]:
    """{node name: why} for the nodes to leave unquantized, `nodes` in topological order."""
    kept = {}
    for pattern in config["quantization"]["exclude"]:
        matched = [n.name for n in nodes if n.op_type == pattern or fnmatch.fnmatchcase(n.name, pattern)]
        if not matched:
            types = sorted({n.op_type for n in nodes})
            raise MdbuildError(f"'{pattern}' matches no node name or operator type of the graph", "quantization.exclude",
                               f"give node names (e.g. '{nodes[0].name}'), glob patterns of names, or operator types "
                               f"of this graph: {', '.join(types[:12])}{', ...' if len(types) > 12 else ''}")
        kept.update({name: f"quantization.exclude '{pattern}'" for name in matched if name not in kept})
    if config["quantization"]["keep_masks_float"]:
        masks = [spec["name"] for spec in config["model"]["inputs"] if role(spec) == "mask"]
        for name in mask_path(nodes, set(masks)):
            kept.setdefault(name, f"reads the attention mask ({', '.join(masks)})")
    return kept


def summary(kept: dict[str, str]) -> dict[str, Any]:
    """What the step's summary says about the nodes kept in float: how many, and why (the first few named)."""
    reasons: dict[str, list[str]] = {}
    for name, why in kept.items():
        reasons.setdefault(why, []).append(name)
    return {"kept_float": len(kept), "kept_float_why": "; ".join(
        f"{len(names)} {why} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" for why, names in reasons.items())}


def mask_path(nodes: list[Node], masks: set[str]) -> list[str]:
    """The nodes reading a mask input or a tensor computed from one (in `nodes` order). A product of the
    mask with another computed tensor (embeddings * mask) gates that tensor: its values stay in the
    tensor's range, and the taint stops there; a product with a constant (mask * float minimum) carries it."""
    tainted, computed, found = set(masks), set(), []
    for node in nodes:
        if tainted.intersection(node.inputs):
            found.append(node.name)
            gates = node.op_type in _GATING and any(t in computed and t not in tainted for t in node.inputs)
            if node.op_type not in _SQUASHING and not gates:
                tainted.update(node.outputs)
        if node.op_type != "Constant":
            computed.update(node.outputs)
    return found


def onnx_nodes(graph) -> list[Node]:
    return [Node(node.name, node.op_type, tuple(node.input), tuple(node.output)) for node in graph.node]


def activation_pairs(graph) -> dict[str, Any]:
    """{dequantized tensor: its QuantizeLinear node} for each Q/DQ pair on an activation (not a weight)."""
    weights = {tensor.name for tensor in graph.initializer}
    quantizers = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights}
    return {n.output[0]: quantizers[n.input[0]] for n in graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in quantizers}


def float_inputs(path: Path, kept: dict[str, str]) -> None:
    """Rewires each node kept in float to read the float tensor where a Q/DQ pair feeds it a quantized copy
    (a quantizer puts Q/DQ on a tensor for its quantized readers, and the others read through it too);
    drops the pairs no longer read."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    restored = activation_pairs(graph)
    for node in graph.node:
        if node.name and node.name in kept:
            for position, name in enumerate(node.input):
                if name in restored:
                    node.input[position] = restored[name].input[0]
    for _ in range(2):  # the dequantize nodes no longer read, then their quantize nodes
        read = {name for node in graph.node for name in tensors_read(node)} | {output.name for output in graph.output}
        unread = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in read]
        for node in unread:
            graph.node.remove(node)
    onnx.save(model, str(path))


def check_scales(path: Path, fix: str) -> None:
    """A Q/DQ scale that is inf, NaN or zero fails the step, naming the tensor it quantizes."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] in values:
            scale = values[node.input[1]]
            if not (np.isfinite(scale).all() and (scale > 0).all()):
                producer = next((n.name for n in graph.node if node.input[0] in n.output), None)
                keep = f"keep '{producer}' in float (quantization.exclude=['{producer}']), " if producer else ""
                raise MdbuildError(f"quantizing '{node.input[0]}' gave the scale {scale.ravel()[:4].tolist()} (node "
                                   f"{node.name}): its calibrated range is not finite or is empty",
                                   "quantization.exclude", keep + fix)

