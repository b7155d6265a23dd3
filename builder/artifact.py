"""The artifact directory: a copy of the package step's cache entry at a deterministic path
(<output.dir>/<recipe>-<target>-<key prefix>), checked by content on every build and replaced
atomically when it is missing or damaged; <recipe>-<target>-latest links to the last one built."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from builder.cache import HOST, Cache, Entry, process_alive
from builder.hashing import sha256_file
from builder.locking import exclusive
from builder.spec import BuildSpec


def artifact_path(spec: BuildSpec, package_key: str) -> Path:
    root = spec.resolve_path(spec.config["output"]["dir"])
    return root / f"{spec.recipe}-{spec.target['name']}-{package_key[:12]}"


def point_latest(spec: BuildSpec, destination: Path) -> str | None:
    """`<recipe>-<target>-latest` beside the artifact: a relative symlink to the artifact this build made,
    replaced in one rename (a reader sees the previous artifact or this one, never neither). Why it could
    not be, or None: the artifact stands either way."""
    link = destination.parent / f"{spec.recipe}-{spec.target['name']}-latest"
    if link.exists() and not link.is_symlink():
        return f"{link} is not a link mdbuild made; left as it is"
    _remove_leftovers(link)
    staging = destination.parent / f"{_prefix(link)}{_OWNER}-{uuid.uuid4().hex[:8]}"
    try:
        os.symlink(destination.name, staging)
        os.replace(staging, link)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        return f"cannot point {link} at the new artifact ({exc.strerror})"
    return None


def materialize(entry: Entry, destination: Path, cache: Cache) -> tuple[Path, str | None]:
    """The artifact directory for `entry`, and why it was replaced when it existed but did not hold this
    build intact. An existing directory is checked by content: every file against the sha256 the
    entry recorded (a flipped byte is found whatever its size and mtime); a copy is made only from an
    entry whose content is checked too (cache.check_content raises DamagedEntry)."""
    if _difference(destination, entry) is None:  # the common case, checked without holding the lock
        return destination, None
    destination.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(destination.parent):  # concurrent builds of one artifact place it one after the other
        problem = _difference(destination, entry)
        if problem is None:
            return destination, None
        cache.check_content(entry, "package")
        _remove_leftovers(destination)
        _place(entry, destination)
    return destination, None if problem == _ABSENT else problem


def _place(entry: Entry, destination: Path) -> None:
    staging = destination.parent / f"{_prefix(destination)}{_OWNER}-{uuid.uuid4().hex[:8]}"
    old = None
    try:
        shutil.copytree(entry.out, staging)
        if destination.exists():  # two renames apart: the directory is missing only between them
            old = destination.parent / f"{_prefix(destination)}{_OWNER}-old-{uuid.uuid4().hex[:8]}"
            os.rename(destination, old)
        os.rename(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


_ABSENT = "absent"
# Staging directories are named for their process: another build's leftovers are removed once it is dead.
_OWNER = f"{HOST}-{os.getpid()}"


def _prefix(destination: Path) -> str:
    return f".{destination.name}."


def _remove_leftovers(destination: Path) -> None:
    """Staging and old copies of this artifact left by builds killed while placing it (their process
    is gone; a live build's are its own business)."""
    for leftover in destination.parent.glob(f"{_prefix(destination)}*"):
        host, _, rest = leftover.name[len(_prefix(destination)):].partition("-")
        pid = rest.split("-", 1)[0]
        if host == HOST and pid.isdigit() and not process_alive(int(pid)):
            if leftover.is_symlink():  # a link to the latest artifact, not yet in place
                leftover.unlink()
            else:
                shutil.rmtree(leftover, ignore_errors=True)


def _difference(destination: Path, entry: Entry) -> str | None:
    """None when the directory holds this build with every file intact; else what differs."""
    if not destination.is_dir():
        return _ABSENT
    for rel, sha in entry.files.items():
        path = destination / rel
        if not path.is_file():
            return f"{rel} is missing"
        if rel not in entry.reports and sha256_file(path) != sha:  # reports hold measurements, not identity
            return f"{rel} does not match its sha256"
    return None
