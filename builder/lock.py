"""Lock files: what a reproducible build is checked against in version control.

One JSON file per recipe, one entry per target: the resolved-config hash, and for every step its
key, the description the key was computed from, and the digest of its output. `mode=check` recomputes
the keys (using the locked digests of upstream outputs, so nothing is built) and names the first step
that differs and why. Steps whose output depends on the host (verify, package) are compared as if run
on the host that wrote the lock: a lock checks on any machine, and the check says where hosts differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.cache import Cache
from builder.errors import MdbuildError
from builder.execute import StepResult
from builder.hashing import write_atomically
from builder.keys import walk
from builder.locking import exclusive
from builder.plan import Plan, StepNode
from builder.reasons import changed_keys, explain
from builder.spec import BuildSpec

# 2: node configs hold only the keys each step reads, per-file factory code, no config_sha256.
LOCK_SCHEMA = 2


def lock_path(spec: BuildSpec) -> Path:
    configured = spec.config["lock"]["path"]
    if configured:
        return spec.resolve_path(configured)
    if spec.recipe_path is not None and not spec.packaged_recipe:
        return spec.recipe_path.with_name(f"{spec.recipe}.lock.json")
    return spec.workdir / "recipes" / f"{spec.recipe}.lock.json"


def _read(path: Path, for_check: bool) -> tuple[dict[str, Any], str | None]:
    """The lock's data, and a note when a build starts anew from an older schema's lock (its entries
    were keyed otherwise). Check mode refuses another schema; every mode refuses a newer one."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"schema": LOCK_SCHEMA, "targets": {}}, None
    except ValueError as exc:
        raise MdbuildError(f"lock file is not valid JSON ({exc})", str(path), "restore it from version control or delete it") from exc
    if not isinstance(data, dict) or not isinstance(data.get("targets", {}), dict):
        raise MdbuildError("not a lock file mdbuild wrote (a JSON object with schema and targets)", str(path),
                           "restore it from version control or delete it")
    schema = data.get("schema")
    if schema == LOCK_SCHEMA:
        return data, None
    if not isinstance(schema, int) or schema > LOCK_SCHEMA:
        raise MdbuildError(f"lock file schema {schema} is newer than this mdbuild's ({LOCK_SCHEMA})", str(path),
                           "use the mdbuild that wrote it (upgrade), or point lock.path elsewhere")
    if for_check:
        raise MdbuildError(f"lock file schema {schema} was written by an older mdbuild (this one writes schema "
                           f"{LOCK_SCHEMA}, whose keys differ)", str(path),
                           "rebuild each target once (mdbuild +recipe=... target=...) to rewrite it; check mode then works")
    dropped = ", ".join(sorted(data.get("targets", {}))) or "none"
    return {"schema": LOCK_SCHEMA, "targets": {}}, (f"{path} was schema {schema} (older keys): started anew, its "
                                                     f"entries dropped (targets: {dropped}); build those once to add them")


def locked_entry(path: Path, target: str, for_check: bool) -> dict[str, Any] | None:
    """The lock's entry for one target, or None where the lock or the entry is missing."""
    return _read(path, for_check)[0]["targets"].get(target) if path.is_file() else None


def check_writable(spec: BuildSpec) -> None:
    """Before a build: a lock it could not update (invalid JSON, a newer schema) fails it at once."""
    _read(lock_path(spec), for_check=False)


def write_lock(spec: BuildSpec, results: dict[str, StepResult]) -> tuple[Path, str | None]:
    """Writes this target's entry; returns the path and a note when an older lock was started anew."""
    path = lock_path(spec)
    steps = [{"id": step_id, "key": r.key, "output_digest": r.entry.digest, "description": r.description}
             for step_id, r in results.items()]
    return path, update(path, spec.recipe, spec.target["name"], {"steps": steps})


def update(path: Path, recipe: str, target: str, entry: dict[str, Any]) -> str | None:
    """Sets one target's entry of the lock at `path`. Read, change and replace happen under a lock on
    the file's directory: concurrent builds of other targets (a sweep) each add theirs, none is lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.parent):
        data, note = _read(path, for_check=False)
        data["recipe"] = recipe
        data["targets"][target] = entry
        data["targets"] = dict(sorted(data["targets"].items()))
        write_atomically(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return note


def check_lock(plan: Plan, cache: Cache) -> tuple[Path, int, str | None]:
    """Raises MdbuildError naming the first step that differs from the lock; returns (path, steps,
    a note naming the host-dependent steps that were locked on another host, or None)."""
    spec = plan.spec
    path = lock_path(spec)
    if not path.is_file():
        raise MdbuildError(f"no lock file at {path}", "lock.path", "build once to write it, or point lock.path at it")
    entry = _read(path, for_check=True)[0]["targets"].get(spec.target["name"])
    if entry is None:
        raise MdbuildError(f"{path} has no entry for target '{spec.target['name']}'", "target",
                           "build this target once to add it to the lock")
    locked = {step["id"]: step for step in entry["steps"]}
    digests: dict[str, str] = {}
    elsewhere: dict[str, list[str]] = {}

    def as_locked(node: StepNode, description: dict[str, Any]) -> None:
        """A host-dependent step is checked as if built on the host that wrote the lock."""
        locked_host = locked.get(node.id, {}).get("description", {}).get("host")
        if node.host_dependent and isinstance(locked_host, dict) and locked_host != description["host"]:
            elsewhere[node.id] = changed_keys(locked_host, description["host"])
            description["host"] = locked_host

    for keyed in walk(plan, cache, digests, as_locked):
        node, step = keyed.node, locked.get(keyed.node.id)
        if step is None:
            raise MdbuildError(f"lock check failed at step '{node.id}': the lock has no such step", str(path),
                               "rebuild to update the lock")
        if keyed.key != step["key"]:
            raise MdbuildError(f"lock check failed at step '{node.id}': {explain(step['description'], keyed.description)}",
                               str(path), "rebuild to update the lock if the change is intended, else revert it")
        digests[node.id] = step["output_digest"]
    note = None
    if elsewhere:
        differences = sorted({key for keys in elsewhere.values() for key in keys})
        note = (f"{', '.join(elsewhere)} were locked on a host that differs from this one in {', '.join(differences)}, "
                f"and were checked as built there; their outputs on this host may differ")
    return path, len(plan.steps), note
