"""The artifact directory: a copy of the package step's cache entry at a deterministic path
(<output.dir>/<recipe>-<target>-<key prefix>), replaced atomically."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from builder.cache import Entry
from builder.spec import BuildSpec


def artifact_path(spec: BuildSpec, package_key: str) -> Path:
    root = spec.resolve_path(spec.config["output"]["dir"])
    return root / f"{spec.recipe}-{spec.target['name']}-{package_key[:12]}"


def materialize(entry: Entry, destination: Path) -> Path:
    if _is_current(destination, entry):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(entry.out, staging)
        if destination.exists():
            old = destination.parent / f".{destination.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(destination, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def _is_current(destination: Path, entry: Entry) -> bool:
    """The directory holds this build, every file present with its recorded size."""
    try:
        manifest = json.loads((destination / "manifest.json").read_text())
        if json.loads((entry.out / "manifest.json").read_text())["build_key"] != manifest["build_key"]:
            return False
        return all((destination / rel).stat().st_size == (entry.out / rel).stat().st_size for rel in entry.files)
    except (OSError, ValueError, KeyError):
        return False
