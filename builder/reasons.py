"""Why a step is not cached: the difference between the description it was last built with and now."""

from __future__ import annotations

from typing import Any


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat or {prefix: {}}
    return {prefix: value}


def changed_keys(before: Any, after: Any) -> list[str]:
    old, new = _flatten(before), _flatten(after)
    return sorted(k for k in old.keys() | new.keys() if old.get(k, _ABSENT) != new.get(k, _ABSENT))


_ABSENT = object()


def explain(previous: dict[str, Any] | None, current: dict[str, Any]) -> str:
    """One line naming what changed between two step descriptions."""
    if previous is None:
        return "never built here"
    if previous == current:
        return "not in cache (cleared, evicted or discarded as corrupt)"
    reasons = []
    if previous.get("version") != current.get("version"):
        reasons.append(f"step version changed: {previous.get('version')}->{current.get('version')}")
    for key in changed_keys(previous.get("config", {}), current.get("config", {})):
        reasons.append(f"config changed: {key}")
    for name in changed_keys(previous.get("inputs", {}), current.get("inputs", {})):
        reasons.append(f"input changed: {name}")
    old_libs, new_libs = previous.get("libraries", {}), current.get("libraries", {})
    for name in sorted(old_libs.keys() | new_libs.keys()):
        if old_libs.get(name) != new_libs.get(name):
            reasons.append(f"library changed: {name} {old_libs.get(name)}->{new_libs.get(name)}")
    old_steps, new_steps = previous.get("steps", {}), current.get("steps", {})
    changed_steps = sorted(step for step in old_steps.keys() | new_steps.keys() if old_steps.get(step) != new_steps.get(step))
    if changed_steps:
        reasons.append(f"recorded step keys changed: {', '.join(changed_steps)}")
    if previous.get("host") != current.get("host"):
        reasons.append("host changed: " + ", ".join(changed_keys(previous.get("host"), current.get("host"))))
    return "; ".join(reasons) or "description changed"
