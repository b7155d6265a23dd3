"""Seeded verification inputs from the recipe's input specs (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from builder.errors import MdbuildError


def concrete_shape(spec: dict[str, Any], dims: dict[str, int], index: int) -> list[int]:
    shape = []
    for dim in spec["shape"]:
        if isinstance(dim, int):
            shape.append(dim)
        elif isinstance(dim, str):
            if dim not in dims:
                raise MdbuildError(
                    f"input '{spec['name']}' has dynamic dimension '{dim}' with no size",
                    f"model.dims.{dim}",
                    f"add model.dims.{dim}=<size> (e.g. 1 for a batch dimension)",
                )
            shape.append(int(dims[dim]))
        else:
            raise MdbuildError(f"dimension {dim!r} is neither a size nor a name", f"model.inputs[{index}].shape")
    return shape


def dynamic_axes(specs: list[dict[str, Any]]) -> dict[str, dict[int, str]]:
    return {
        spec["name"]: {axis: dim for axis, dim in enumerate(spec["shape"]) if isinstance(dim, str)}
        for spec in specs
        if any(isinstance(dim, str) for dim in spec["shape"])
    }


def make_inputs(specs: list[dict[str, Any]], dims: dict[str, int], samples: int, seed: int) -> dict[str, np.ndarray]:
    """{input name: array of shape (samples, *input shape)}: standard normal floats, uniform ints."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for index, spec in enumerate(specs):
        shape = [samples] + concrete_shape(spec, dims, index)
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            arrays[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec["name"]] = rng.integers(0, 2, shape).astype(dtype)
        else:
            arrays[spec["name"]] = rng.integers(spec["low"], spec["high"], shape).astype(dtype)
    return arrays

