"""Samples: one model input each, without the batch dimension, as {input name: array}. A sample's
dynamic dimensions besides the batch (a sequence) may differ from another's; `collate` pads a
group of them into one batch the way a tokenizer does (pure numpy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

Sample = dict[str, np.ndarray]


def save(path: Path, samples: list[Sample], **extra: np.ndarray) -> None:
    arrays = {f"{index}/{name}": value for index, sample in enumerate(samples) for name, value in sample.items()}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays, **{f"extra/{name}": value for name, value in extra.items()})


def load(path: Path) -> tuple[list[Sample], dict[str, np.ndarray]]:
    samples: dict[int, Sample] = {}
    extra = {}
    with np.load(path) as archive:
        for key in archive.files:
            head, name = key.split("/", 1)
            if head == "extra":
                extra[name] = archive[key]
            else:
                samples.setdefault(int(head), {})[name] = archive[key]
    return [samples[index] for index in sorted(samples)], extra


def role(spec: dict[str, Any]) -> str:
    """How an input's values behave: `mask` (1 for a real position, `pad` for padding), `ids` (token
    ids or indices in [low, high)) or `values` (floats). model.inputs[i].role, else guessed: an input
    whose name ends in "mask" is one (an integer one only with no range declared or [0, 2))."""
    if spec.get("role", "auto") != "auto":
        return spec["role"]
    kind = np.dtype(spec["dtype"]).kind
    declared = (spec.get("low"), spec.get("high"))
    if spec["name"].lower().endswith("mask") and (kind in "fb" or declared in ((None, None), (0, 2), (0, None), (None, 2))):
        return "mask"
    return "values" if kind == "f" else "ids"


def value_range(spec: dict[str, Any]) -> tuple[int, int]:
    """[low, high) of an integer input's seeded values: as declared, else [0, 2) for a mask or a bool, [0, 100)."""
    default = (0, 2) if role(spec) == "mask" or np.dtype(spec["dtype"]).kind == "b" else (0, 100)
    low, high = spec.get("low"), spec.get("high")
    return (default[0] if low is None else low), (default[1] if high is None else high)


def collate(samples: list[Sample], specs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One batch of the samples: each input padded at the end of every axis to the group's largest
    size with the input's `pad` value (0 by default: a mask's padding, most tokenizers' [PAD])."""
    batch = {}
    for spec in specs:
        arrays = [sample[spec["name"]] for sample in samples]
        largest = np.max([a.shape for a in arrays], axis=0) if arrays[0].ndim else []
        batch[spec["name"]] = np.stack([
            np.pad(a, [(0, int(m) - s) for s, m in zip(a.shape, largest)], constant_values=spec.get("pad", 0))
            if a.ndim else a for a in arrays])
    return batch


def describe_feed(name: str, values) -> str:
    """An input's shape, type and, for integers (token ids, indices), the values it holds: for errors."""
    values = np.asarray(values)
    described = f"{name} {list(values.shape)} {values.dtype}"
    if values.dtype.kind in "iu" and values.size:
        described += f" values {values.min()}..{values.max()}"
    return described
