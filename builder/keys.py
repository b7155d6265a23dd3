"""Step keys: a step's description (its config, its inputs' digests, its libraries, the host where
its output depends on it) and the key that is the description's sha256. One walk over a plan serves
build, plan and check; they differ only in where each step's output digest comes from (a fresh
result or the cache, the cache, the lock)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from builder.cache import Cache
from builder.hashing import canonical_json, sha256_text
from builder.plan import Plan, StepNode
from builder.serving.host import host_fingerprint
from builder.versions import library_versions


@dataclass
class Keyed:
    node: StepNode
    description: dict[str, Any] | None  # None: an upstream step's output is not known yet
    key: str | None
    pending: list[str]  # those upstream steps


def describe(node: StepNode, upstream_digests: dict[str, str], cache: Cache, keys: dict[str, str]) -> dict[str, Any]:
    """Everything the step's output depends on; its sha256 is the step's key. `keys`: those of the
    steps before it, which a step that embeds them (the package's manifest) depends on too."""
    inputs = {name: upstream_digests[step_id] for name, step_id in node.upstream.items()}
    for name, path in node.files.items():
        inputs[name] = cache.digests.path(path, "*.py" if name.endswith("_code") else "*")
    description = {
        "step": node.id,
        "run": node.run,
        "version": node.version,
        "config": node.config,
        "inputs": inputs,
        "libraries": {**library_versions(*node.libraries), **node.extra_versions},
    }
    if node.embeds_keys:
        description["steps"] = dict(keys)
    if node.host_dependent:
        description["host"] = _host(node.host)
    return description


def step_key(description: dict[str, Any]) -> str:
    return sha256_text(canonical_json(description))


def walk(plan: Plan, cache: Cache, digests: dict[str, str],
         adjust: Callable[[StepNode, dict[str, Any]], None] | None = None) -> Iterator[Keyed]:
    """Each step with its description and key, in plan order. The caller puts a step's output digest
    into `digests` (under its id) before asking for the next; `adjust` may change a description
    before it is keyed (check mode: a host-dependent step as if on the host that wrote the lock)."""
    keys: dict[str, str] = {}
    for index, node in enumerate(plan.steps):
        waiting = {step for step in node.upstream.values() if step not in digests}
        if node.embeds_keys:
            waiting |= {step.id for step in plan.steps[:index] if step.id not in keys}
        if waiting:
            yield Keyed(node, None, None, sorted(waiting))
            continue
        description = describe(node, digests, cache, keys)
        if adjust is not None:
            adjust(node, description)
        keys[node.id] = step_key(description)
        yield Keyed(node, description, keys[node.id], [])


def _host(facts: str | None) -> dict[str, Any]:
    if facts is None:
        return host_fingerprint()
    module, function = facts.split(":")
    return getattr(importlib.import_module(module), function)()
