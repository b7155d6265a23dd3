"""Verification cases: the batches the source model and the artifact both run. Every sample alone;
batches of several sizes, mixing sequence lengths so that padding and masks are exercised; and one
perturbation of each input (masked positions, other token ids, noisy values), to check that the
artifact responds to every input as the source model does (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from builder.errors import MdbuildError
from builder.inputs import batch_dim
from builder.samples import Sample, collate, role, value_range

# {"name", "kind": sample | batch | perturbed, "feeds": {input: batch}, "perturbs": None | {"input", "of", "how"}}
Case = dict[str, Any]

# Float inputs change by noise of this fraction of their spread (large, so that the response stands above
# an int8 artifact's own error on small outputs); a tenth of the token ids are replaced.
_NOISE = 0.5
_REPLACED = 0.1


def sizes(model: dict[str, Any], verify: dict[str, Any]) -> dict[str, list[int]]:
    """The sizes verified of each dynamic dimension: verify.sizes.<dim>, else for the batch 1, 3 and
    model.dims.batch; for a sequence (a dynamic dimension of an integer input) short, middle and longest
    (model.dims); any other dimension at its model.dims size."""
    batch = batch_dim(model["inputs"])
    given = verify["sizes"] or {}
    found = {}
    for spec in model["inputs"]:
        for dim in spec["shape"]:
            if not isinstance(dim, str) or dim in found:
                continue
            largest = int(model["dims"][dim])
            if dim == batch:
                default = [1, 3, largest]
            elif np.dtype(spec["dtype"]).kind in "iub":
                default = [max(1, largest // 4), largest // 2 + 1, largest]
            else:
                default = [largest]
            values = given.get(dim, default)
            where = f"verify.sizes.{dim}"
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
                raise MdbuildError(f"{values!r} is not a list of positive sizes", where, f"e.g. {where}=[1,{largest}]")
            if dim != batch and max(values) > largest:
                raise MdbuildError(f"size {max(values)} exceeds model.dims.{dim}={largest}, the longest the model is "
                                   "built for", where, f"keep the sizes at most {largest}, or raise model.dims.{dim}")
            found[dim] = sorted(set(values))
    unknown = sorted(set(given) - set(found))
    if unknown:
        raise MdbuildError(f"'{unknown[0]}' is not a dynamic dimension of model.inputs", f"verify.sizes.{unknown[0]}",
                           f"give sizes for: {', '.join(found) or 'none (every input shape is fixed)'}")
    return found


def build(found: list[Sample], model: dict[str, Any], verify: dict[str, Any]) -> list[Case]:
    """The cases for the samples: each in the smallest batch verified (alone, unless the batch is fixed
    larger), then one batch of each other size (consecutive samples, lengths mixed and padded), then one
    perturbation of each input, of the longest of the first cases."""
    specs = model["inputs"]
    batch = batch_dim(specs)
    counts = sizes(model, verify).get(batch, [1]) if batch else [specs[0]["shape"][0] if specs[0]["shape"] else 1]
    single = min(counts)
    cases = [_case("sample", [found[(start + offset) % len(found)] for offset in range(single)], specs, batch,
                   f"sample {start}" if single == 1 else f"samples {start}-{start + single - 1}")
             for start in range(0, len(found), single)]
    base = max(range(len(cases)), key=lambda index: _positions(cases[index]["feeds"]))
    cases += [_case("batch", [found[index % len(found)] for index in range(count)], specs, batch, f"batch of {count}")
              for count in counts if count != single]
    rng = np.random.default_rng(verify["seed"])
    for spec in specs:
        feeds = dict(cases[base]["feeds"])
        others = [c["feeds"][spec["name"]] for c in cases[:base] + cases[base + 1:] if c["kind"] == "sample"]
        changed, how = _perturb(spec, feeds, specs, others, rng)
        if how:
            feeds[spec["name"]] = changed
            cases.append({"name": f"{spec['name']}: {how}", "kind": "perturbed", "feeds": feeds,
                          "perturbs": {"input": spec["name"], "of": base, "how": how}})
    return cases


def _case(kind: str, group: list[Sample], specs: list[dict[str, Any]], batch: str | None, name: str) -> Case:
    feeds = collate(group, specs)
    lengths = {dim: size for spec in specs for dim, size in zip(spec["shape"], feeds[spec["name"]].shape)
               if isinstance(dim, str) and dim != batch}
    described = ", ".join(f"{dim} {size}" for dim, size in lengths.items())
    return {"name": f"{name} ({described})" if described else name, "kind": kind, "feeds": feeds, "perturbs": None}


def _positions(feeds: dict[str, np.ndarray]) -> int:
    return sum(array.size for array in feeds.values())


def _perturb(spec: dict[str, Any], feeds: dict[str, np.ndarray], specs: list[dict[str, Any]],
             others: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, str | None]:
    """The input changed the way its data allows, and how (None: it cannot be changed). A float input takes
    another sample's values where one has its shape: a change as large as the data's own, well above an
    int8 artifact's rounding (small noise vanished in requantization and read as an ignored input)."""
    values = feeds[spec["name"]]
    kind = role(spec)
    if kind == "mask":
        changed = values.copy()
        for row in changed.reshape(-1, changed.shape[-1]) if changed.ndim else []:
            real = np.flatnonzero(row)
            row[real[(len(real) + 1) // 2:]] = 0  # mask the later half of the real positions, keep at least one
        return (changed, "later half of the positions masked") if not np.array_equal(changed, values) else (values, None)
    if kind == "ids":
        low, high = value_range(spec)
        real = _real_positions(values, feeds, specs)
        if high - low < 2 or real.size == 0:
            return values, None
        changed = values.copy().reshape(-1)
        chosen = rng.choice(real, max(1, int(real.size * _REPLACED)), replace=False)
        changed[chosen] = (changed[chosen] - low + rng.integers(1, high - low, len(chosen))) % (high - low) + low
        return changed.reshape(values.shape), f"{len(chosen)} of {real.size} ids replaced"
    other = next((o for o in others if o.shape == values.shape and not np.array_equal(o, values)), None)
    if other is not None:
        return other, "another sample's values"
    # Within the values' own range: calibrated int8 clips what lies beyond it, which says nothing of the artifact.
    spread = float(np.std(values)) or 1.0
    changed = np.clip(values + rng.standard_normal(values.shape) * _NOISE * spread, values.min(), values.max())
    if np.array_equal(changed, values):
        return values, None
    return changed.astype(values.dtype), f"noise of {_NOISE:g} x its spread added, within its range"


def _real_positions(values: np.ndarray, feeds: dict[str, np.ndarray], specs: list[dict[str, Any]]) -> np.ndarray:
    """Flat indices of the positions a mask of the same shape marks as real (all, without such a mask)."""
    masks = [feeds[s["name"]] for s in specs if role(s) == "mask" and feeds[s["name"]].shape == values.shape]
    return np.flatnonzero(masks[0]) if masks else np.arange(values.size)
