"""Lock files: what a reproducible build is checked against in version control.

One JSON file per recipe, one entry per target: the resolved-config hash, and for every step its
key, the description the key was computed from, and the digest of its output. `mode=check` recomputes
the keys (using the locked digests of upstream outputs, so nothing is built) and names the first step
that differs and why. Steps whose output depends on the host (verify, package) are compared as if run
on the host that wrote the lock: a lock checks on any machine, and the check says where hosts differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from builder.cache import Cache
from builder.errors import MdbuildError
from builder.execute import StepResult, describe, step_key
from builder.hashing import canonical_json, sha256_text
from builder.plan import Plan
from builder.reasons import changed_keys, explain
from builder.spec import BuildSpec

LOCK_SCHEMA = 1


def lock_path(spec: BuildSpec) -> Path:
    configured = spec.config["lock"]["path"]
    if configured:
        return spec.resolve_path(configured)
    if spec.recipe_path is not None and not spec.packaged_recipe:
        return spec.recipe_path.with_name(f"{spec.recipe}.lock.json")
    return spec.workdir / "recipes" / f"{spec.recipe}.lock.json"


def config_hash(spec: BuildSpec) -> str:
    return sha256_text(canonical_json(spec.artifact_config))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"schema": LOCK_SCHEMA, "targets": {}}
    except ValueError as exc:
        raise MdbuildError(f"lock file is not valid JSON ({exc})", str(path), "restore it from version control or delete it") from exc
    if data.get("schema") != LOCK_SCHEMA:
        raise MdbuildError(f"lock file schema {data.get('schema')} is not {LOCK_SCHEMA}", str(path), "rebuild to rewrite it")
    return data


def write_lock(spec: BuildSpec, results: dict[str, StepResult]) -> Path:
    path = lock_path(spec)
    data = _read(path)
    data["recipe"] = spec.recipe
    data["targets"][spec.target["name"]] = {
        "config_sha256": config_hash(spec),
        "steps": [
            {"id": step_id, "key": r.key, "output_digest": r.entry.digest, "description": r.description}
            for step_id, r in results.items()
        ],
    }
    data["targets"] = dict(sorted(data["targets"].items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def check_lock(plan: Plan, cache: Cache) -> tuple[Path, int, str | None]:
    """Raises MdbuildError naming the first step that differs from the lock; returns (path, steps,
    a note naming the host-dependent steps that were locked on another host, or None)."""
    spec = plan.spec
    path = lock_path(spec)
    if not path.is_file():
        raise MdbuildError(f"no lock file at {path}", "lock.path", "build once to write it, or point lock.path at it")
    entry = _read(path)["targets"].get(spec.target["name"])
    if entry is None:
        raise MdbuildError(f"{path} has no entry for target '{spec.target['name']}'", "target",
                           "build this target once to add it to the lock")
    locked = {step["id"]: step for step in entry["steps"]}
    digests: dict[str, str] = {}
    elsewhere: dict[str, list[str]] = {}
    for node in plan.steps:
        step = locked.get(node.id)
        description = describe(node, digests, cache)
        if step is None:
            raise MdbuildError(f"lock check failed at step '{node.id}': the lock has no such step", str(path),
                               "rebuild to update the lock")
        locked_host = step["description"].get("host")
        if node.host_dependent and isinstance(locked_host, dict) and locked_host != description["host"]:
            elsewhere[node.id] = changed_keys(locked_host, description["host"])
            description["host"] = locked_host
        if step_key(description) != step["key"]:
            raise MdbuildError(f"lock check failed at step '{node.id}': {explain(step['description'], description)}",
                               str(path), "rebuild to update the lock if the change is intended, else revert it")
        digests[node.id] = step["output_digest"]
    note = None
    if elsewhere:
        differences = sorted({key for keys in elsewhere.values() for key in keys})
        note = (f"{', '.join(elsewhere)} were locked on a host that differs from this one in {', '.join(differences)}, "
                f"and were checked as built there; their outputs on this host may differ")
    return path, len(plan.steps), note
