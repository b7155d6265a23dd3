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


def describe(node: StepNode, upstream_digests: dict[str, str], cache: Cache) -> dict[str, Any]:
    """Everything the step's output depends on; its sha256 is the step's key."""
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
    for node in plan.steps:
        pending = sorted({step for step in node.upstream.values() if step not in digests})
        if pending:
            yield Keyed(node, None, None, pending)
            continue
        description = describe(node, digests, cache)
        if adjust is not None:
            adjust(node, description)
        yield Keyed(node, description, step_key(description), [])


def _host(facts: str | None) -> dict[str, Any]:
    if facts is None:
        return host_fingerprint()
    module, function = facts.split(":")
    return getattr(importlib.import_module(module), function)()
