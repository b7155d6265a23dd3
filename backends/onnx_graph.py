"""What the backends' graph rewrites share: the graph's tensor signature, the clean-ups converters need
(ONNX -> PyTorch, ONNX -> TensorFlow, float16), and the record of which converter ran."""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

import numpy as np

from builder.errors import MdbuildError
from builder.versions import library_version

_ONNX_TYPES = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "bool"}


def signature(model) -> dict[str, list]:
    """{"inputs": [[name, dtype, dims]], "outputs": [...]} with None for dynamic sizes; graph
    inputs that are initializers (old exporters list weights as inputs) are not model inputs."""
    weights = {tensor.name for tensor in model.graph.initializer}

    def describe(values) -> list:
        described = []
        for value in values:
            if value.name in weights:
                continue
            tensor = value.type.tensor_type
            if tensor.elem_type not in _ONNX_TYPES or not tensor.HasField("shape"):
                raise MdbuildError(f"tensor '{value.name}' has an element type ({tensor.elem_type}) or shape the "
                                   "framework targets do not handle", "target.backend",
                                   f"use {', '.join(_ONNX_TYPES.values())} tensors with a declared shape")
            described.append([value.name, _ONNX_TYPES[tensor.elem_type],
                              [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]])
        return described

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def fold_weight_identities(model) -> int:
    """Exporters deduplicate equal weights (e.g. zero biases) as Identity nodes reading one
    initializer; converters that look weights up by name (onnx2torch, onnx2pytorch) fail on them.
    Each such Identity becomes a copy of the weight under its output's name. Returns the count."""
    import onnx

    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    graph_outputs = {value.name for value in graph.output}
    kept, folded = [], 0
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in weights and node.output[0] not in graph_outputs:
            copy = onnx.TensorProto()
            copy.CopyFrom(weights[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            weights[copy.name] = copy
            folded += 1
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return folded


def converter_record(distribution: str, **details: Any) -> dict[str, Any]:
    """What the manifest says about the conversion: which converter, which version, how."""
    return {"name": distribution, "version": library_version(distribution), **details}


def example_inputs(inputs: list, batch: int):
    """Deterministic float/int arrays for the signature, dynamic sizes set to `batch` (1 elsewhere)."""
    rng = np.random.default_rng(0)
    arrays = []
    for _, dtype, dims in inputs:
        shape = [(batch if index == 0 else 1) if d is None else d for index, d in enumerate(dims)]
        if dtype.startswith("float"):
            arrays.append(rng.standard_normal(shape).astype(dtype))
        else:
            arrays.append(np.zeros(shape, dtype=dtype))
    return arrays


def prepared_for_quantization(model_path: Path, progress) -> Path:
    """ONNX Runtime's pre-processing before its quantizer (shape inference, folding), into the step's
    scratch directory (the current one)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    progress("pre-processing (shape inference, folding)")
    quant_pre_process(str(model_path), "prepared.onnx", skip_symbolic_shape=True)
    return Path("prepared.onnx")


def tidy_fp16_graph(model) -> None:
    """Mends what ONNX Runtime's float16 converter leaves: it casts a float32 tensor passed between two
    nodes it kept in float32 (or from a float32 input to one) to float16 and back, a lossy round trip
    and inf beyond 65504 (each one goes); it appends its casts after the nodes that read them, which
    ONNX's checker refuses (the nodes are sorted); and it may leave stale value_info."""
    import onnx

    # The converter leaves value_info with the old float types on some graphs (a dynamo-exported
    # TransformerEncoder): stale, it is dropped (it is optional) and the types are inferred anew.
    del model.graph.value_info[:]
    ordered = _sorted_nodes(list(model.graph.node))  # inference types a node only after those it reads
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    try:
        typed = onnx.shape_inference.infer_shapes(model).graph
    except onnx.shape_inference.InferenceError:  # no types: no round trip is provably one; the sort still runs
        typed = onnx.GraphProto()
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.input, *typed.value_info, *typed.output]}
    graph = model.graph
    made_by = {output: node for node in graph.node for output in node.output}
    outputs = {value.name for value in graph.output}

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    # Names read inside If/Loop bodies cannot be renamed there: those casts stay.
    inner = {name for node in graph.node for name in tensors_read(node)} - {name for node in graph.node for name in node.input}
    rename = {}
    for node in graph.node:
        before = made_by.get(node.input[0]) if node.input else None
        if (cast_to(node) == onnx.TensorProto.FLOAT and before is not None and cast_to(before) == onnx.TensorProto.FLOAT16
                and types.get(before.input[0]) == onnx.TensorProto.FLOAT and node.output[0] not in outputs | inner):
            rename[node.output[0]] = before.input[0]
    kept = [node for node in graph.node if node.output[0] not in rename]
    for node in kept:
        node.input[:] = [rename.get(name, name) for name in node.input]
    read = {name for node in kept for name in tensors_read(node)} | outputs
    kept = [node for node in kept if cast_to(node) is None or node.output[0] in read]
    del graph.node[:]
    graph.node.extend(_sorted_nodes(kept))


def tensors_read(node) -> set[str]:
    """The tensors a node reads: its inputs and, for If/Loop/Scan, what its bodies use (an over-count:
    names the bodies define themselves are in it too, and match nothing outside)."""
    names = set(node.input)
    for attribute in node.attribute:
        for body in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            for inner in body.node:
                names |= tensors_read(inner)
    return names - {""}


def _sorted_nodes(nodes: list) -> list:
    """The nodes in their order where each comes after the nodes it reads from (Kahn's algorithm, the
    earliest ready node first); as they are if they form a cycle."""
    producer = {output: index for index, node in enumerate(nodes) for output in node.output if output}
    needs = [{producer[name] for name in tensors_read(node) if name in producer} - {index} for index, node in enumerate(nodes)]
    readers: dict[int, list[int]] = {}
    for index, needed in enumerate(needs):
        for other in needed:
            readers.setdefault(other, []).append(index)
    ready = [index for index, needed in enumerate(needs) if not needed]
    heapq.heapify(ready)
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for reader in readers.get(index, []):
            needs[reader].discard(index)
            if not needs[reader]:
                heapq.heappush(ready, reader)
    return [nodes[index] for index in order] if len(order) == len(nodes) else nodes
