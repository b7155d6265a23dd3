"""What the framework converters (ONNX -> PyTorch, ONNX -> TensorFlow) share: the graph's tensor
signature, the clean-ups converters need, and the record of which converter ran."""

from __future__ import annotations

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
