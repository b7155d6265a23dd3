"""The keys of the resolved config a step reads. Its node's config holds exactly these, so a step
cannot read a key that is not in its cache key, and a key it does not read cannot rebuild it."""

from __future__ import annotations

import copy
from typing import Any, Iterable


def select(config: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The nested part of `config` under the dotted `paths` (a section's path selects all of it)."""
    chosen: dict[str, Any] = {}
    for path in paths:
        *parents, last = path.split(".")
        source, target = config, chosen
        for part in parents:
            source = source[part]
            target = target.setdefault(part, {})
        target[last] = copy.deepcopy(source[last])
    return chosen

