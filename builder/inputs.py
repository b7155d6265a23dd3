"""Seeded random inputs from the recipe's input specs (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from builder.errors import MdbuildError
from builder.samples import Sample, role, value_range


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


def batch_dim(specs: list[dict[str, Any]]) -> str | None:
    """The batch dimension: the name every input's first dimension shares, when it is dynamic."""
    firsts = {spec["shape"][0] if spec["shape"] else None for spec in specs}
    first = firsts.pop() if len(firsts) == 1 else None
    return first if isinstance(first, str) else None


def make_inputs(specs: list[dict[str, Any]], dims: dict[str, int], samples: int, seed: int) -> dict[str, np.ndarray]:
    """{input name: array of shape (samples, *input shape)}: standard normal floats, uniform ints."""
    rng = np.random.default_rng(seed)
    return {spec["name"]: _values(spec, [samples] + concrete_shape(spec, dims, index), rng)
            for index, spec in enumerate(specs)}


def random_samples(specs: list[dict[str, Any]], dims: dict[str, int], count: int, seed: int,
                   lengths: dict[str, list[int]] | None = None) -> list[Sample]:
    """`count` seeded samples (each input without its first dimension); a dimension named in `lengths`
    takes its sizes in turn (short, middle and longest sequences). Masks are all ones: padding comes
    from batching samples of different lengths."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        sizes = {**dims, **{dim: values[index % len(values)] for dim, values in (lengths or {}).items()}}
        samples.append({spec["name"]: _values(spec, concrete_shape(spec, sizes, n)[1:], rng) for n, spec in enumerate(specs)})
    return samples


def _values(spec: dict[str, Any], shape: list[int], rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(spec["dtype"])
    if role(spec) == "mask":
        return np.ones(shape, dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(*value_range(spec), shape).astype(dtype)

