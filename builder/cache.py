"""Content-addressed, append-only step cache.

An entry is `entries/<k[:2]>/<key>/` with the step's files under `out/` and `meta.json` listing
each file's sha256, size and mtime. A step runs in `tmp/`, and is committed with one rename, so
a build killed at any moment leaves no half entry. On a hit every file is stat-checked; a file whose
size or mtime changed is re-hashed, and an entry whose content no longer matches is discarded. The
entries a running step reads, and the one an artifact is copied from, are re-hashed in full
(`check_content`): a same-size change with its mtime restored is found there. One build at a time
computes a key (`lease`); concurrent builds of it wait and take its entry.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from builder.errors import MdbuildError
from builder.locking import Held, Unshared, lease
from builder.remote import Remote
from builder.hashing import DigestMemo, digest_tree, list_files, sha256_file, sha256_text, write_atomically

_ENTRY_FORMAT = 1
HOST = socket.gethostname().replace("-", "_") or "host"


def default_cache_dir() -> Path:
    env = os.environ.get("MDBUILD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mdbuild"


class DamagedEntry(MdbuildError):
    """A cache entry whose content no longer matches its sha256 (found where content is checked): it has
    been discarded, and the build starts over to rebuild it."""

    def __init__(self, step: str, key: str, problem: str, remote: bool = False):
        super().__init__(f"the cache entry of step '{step}' ({key[:12]}) is damaged: {problem}",
                         "cache.remote" if remote else "cache.dir", "build again; if it recurs, check the disk under the cache")
        self.step, self.key, self.problem, self.remote = step, key, problem, remote


@dataclass(frozen=True)
class Entry:
    key: str
    out: Path
    files: dict[str, str]  # relative path -> sha256
    reports: tuple[str, ...] = ()  # files that report this run (measured latency): checked, not identity

    @property
    def digest(self) -> str:
        return output_digest(self.files, self.reports)


def output_digest(files: dict[str, str], reports: tuple[str, ...] | list[str]) -> str:
    """What a step's output is, for the keys downstream and the lock: every file but its reports, so
    that two builds of the same inputs give the same digest however fast they ran."""
    return digest_tree({rel: sha for rel, sha in files.items() if rel not in reports})


class Cache:
    def __init__(self, root: Path, enabled: bool = True, remote: Remote | None = None, push: bool = True):
        self.root = Path(root)
        self.enabled = enabled
        self.digests = DigestMemo(self.root / "digests.json" if enabled else None)
        self.warnings: list[str] = []
        self.discarded: dict[str, str] = {}  # key: why its entry was discarded in this build
        self.remote = remote if enabled else None  # the shared tier (builder.remote)
        self.pushes = push
        self.remote_only: set[str] = set()  # keys known by their remote manifest, downloaded when read
        self.remote_damaged: set[str] = set()  # keys whose remote copy could not be downloaded intact
        if self.remote is not None:
            self.remote.warnings = self.warnings

    def remote_entry(self, key: str) -> Entry | None:
        """The remote tier's entry of `key`, known by its manifest alone: its files are downloaded when a step
        or the artifact reads them (check_content), so a rebuild fetches only what it uses."""
        if self.remote is None or key in self.remote_damaged:
            return None
        meta = self.remote.manifest(key)
        try:
            files = {rel: info["sha256"] for rel, info in meta["files"].items()} if meta else None
        except (KeyError, TypeError, AttributeError):
            self.warnings.append(f"remote cache: the manifest of {key[:12]} is malformed; building it here")
            files = None
        if not files:
            return None
        self.remote_only.add(key)
        return Entry(key, self._entry_dir(key) / "out", files, tuple(meta.get("reports", ())))

    def fetch(self, key: str) -> Entry | None:
        """The remote tier's entry of `key`, downloaded, checked and committed here; None on a miss."""
        if self.remote is None:
            return None
        work = self.new_workdir()
        try:
            meta = self.remote.fetch(key, work / "out")
            if meta is None:
                self.abandon(work)
                return None
            return self.commit(key, work, meta.get("description", {}), meta.get("seconds", 0.0),
                               tuple(meta.get("reports", ())))
        except BaseException:
            self.abandon(work)
            raise

    def push(self, entry: Entry) -> None:
        """Uploads an entry this build computed to the remote tier (cache.push); over the remote's copy
        where that one was found damaged."""
        meta = self.peek(entry.key)
        if self.remote is not None and self.pushes and meta is not None:
            self.remote.push(entry.key, entry.out, meta, replace=entry.key in self.remote_damaged)

    # -- lookup ------------------------------------------------------------------------------
    def _entry_dir(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / key

    def lookup(self, key: str) -> Entry | None:
        if not self.enabled:
            return None
        entry_dir = self._entry_dir(key)
        meta_path = entry_dir / "meta.json"
        if not meta_path.is_file():
            return None
        problem = None
        try:
            meta = json.loads(meta_path.read_text())
            files = meta["files"]
            for rel, info in files.items():
                problem = _check_file(entry_dir / "out" / rel, info)
                if problem:
                    break
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"unreadable metadata ({exc})"
        if problem:
            self.warnings.append(f"cache entry {key[:12]} is corrupt ({problem}); rebuilding it")
            self.discard(key, problem)
            return None
        try:
            os.utime(meta_path)  # its last use, for `mdbuild cache gc --older-than`
        except OSError:
            pass  # a read-only cache
        return Entry(key, entry_dir / "out", {rel: info["sha256"] for rel, info in files.items()},
                     tuple(meta.get("reports", ())))

    def check_content(self, entry: Entry, step: str) -> None:
        """Re-hashes every file of `entry` (its size and mtime may be intact where its bytes are not);
        a mismatch discards it and raises DamagedEntry. For entries whose content is about to be used:
        the inputs of a step that runs, the files an artifact is copied from. A remote entry is
        downloaded first; one that cannot be, intact, is damaged too (the build then computes it here)."""
        if self.remote is not None and entry.key in self.remote_only and not (entry.out.parent / "meta.json").is_file():
            fetched = self.fetch(entry.key)
            if fetched is None or fetched.digest != entry.digest:
                self.remote_damaged.add(entry.key)  # not taken from the remote again; the build's copy replaces it
                if fetched is not None:
                    self.discard(entry.key, "its remote copy changed while it was read")
                raise DamagedEntry(step, entry.key, "its remote copy could not be downloaded intact", remote=True)
        for rel, sha in entry.files.items():
            try:
                intact = sha256_file(entry.out / rel) == sha
            except OSError:  # missing, or discarded by another build meanwhile
                intact = False
            if not intact:
                problem = f"{rel} does not match its sha256"
                self.discard(entry.key, problem)
                raise DamagedEntry(step, entry.key, problem)

    @contextmanager
    def lease(self, key: str, waiting) -> Iterator[Held]:
        """While held, no other build of this cache computes `key` (builder.locking.lease), nor, with a
        remote tier, a build on another host (Remote.lease) unless its entry appeared meanwhile."""
        if not self.enabled:
            yield Unshared()
            return
        with lease(self.root / "leases" / key[:2] / key, waiting) as held:
            if self.remote is None or not self.pushes:  # a build that does not publish makes no one wait for it
                yield held
                return
            with self.remote.lease(key, waiting):
                yield held

    def peek(self, key: str) -> dict[str, Any] | None:
        """The metadata of an entry without verifying it (plan and check modes)."""
        try:
            return json.loads((self._entry_dir(key) / "meta.json").read_text())
        except (OSError, ValueError):
            return None

    def peek_digest(self, key: str) -> str | None:
        """The output digest of an entry, unverified (plan mode must not re-hash every model); here, else
        in the remote tier."""
        meta = self.peek(key) or (self.remote.manifest(key) if self.remote is not None else None)
        if meta is None:
            return None
        return output_digest({rel: info["sha256"] for rel, info in meta["files"].items()}, meta.get("reports", ()))

    # -- commit ------------------------------------------------------------------------------
    def new_workdir(self) -> Path:
        """A private directory: the step writes its results into `out/` and anything else (tools'
        temporary files) into `scratch/`, which `commit` deletes before moving the entry into place."""
        parent = self.root / "tmp"
        parent.mkdir(parents=True, exist_ok=True)
        work = parent / f"{HOST}-{os.getpid()}-{uuid.uuid4().hex}"
        (work / "out").mkdir(parents=True)
        (work / "scratch").mkdir()
        return work

    def commit(self, key: str, work: Path, description: dict[str, Any], seconds: float,
               reports: tuple[str, ...] = ()) -> Entry:
        shutil.rmtree(work / "scratch", ignore_errors=True)
        out = work / "out"
        files = {}
        meta_files = {}
        for rel in list_files(out):
            path = out / rel
            stat = path.stat()
            digest = sha256_file(path)
            files[str(rel)] = digest
            meta_files[str(rel)] = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        meta = {"format": _ENTRY_FORMAT, "key": key, "description": description, "files": meta_files,
                "reports": list(reports), "seconds": round(seconds, 3)}
        if not self.enabled:
            return Entry(key, out, files, reports)
        (work / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        final = self._entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(work, final)
        except OSError:
            # Another build committed the same key first; its content is equivalent by construction.
            shutil.rmtree(work, ignore_errors=True)
            existing = self.lookup(key)
            if existing is None:
                raise
            return existing
        return Entry(key, final / "out", files, reports)

    def abandon(self, work: Path) -> None:
        shutil.rmtree(work, ignore_errors=True)

    def clean_stale_workdirs(self) -> None:
        """Remove workdirs of builds that died (their process no longer exists)."""
        parent = self.root / "tmp"
        if not parent.is_dir():
            return
        for work in parent.iterdir():
            host, _, rest = work.name.partition("-")
            pid = rest.split("-", 1)[0]
            # Only this host's: a cache directory may be shared with other machines.
            if host == HOST and pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(work, ignore_errors=True)

    def discard(self, key: str, why: str) -> None:
        self.discarded[key] = why
        entry_dir = self._entry_dir(key)
        trash = self.root / "tmp" / f"{HOST}-{os.getpid()}-discard-{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(entry_dir, trash)
        except OSError as exc:
            if entry_dir.exists():  # not another build's discard: this one cannot remove it
                raise MdbuildError(f"cannot remove the damaged cache entry {entry_dir} ({exc.strerror})", "cache.dir",
                                   "fix the cache's permissions, or remove that directory by hand") from exc
            return
        shutil.rmtree(trash, ignore_errors=True)

    # -- why a step is not cached ------------------------------------------------------------
    def last_description(self, slot: str) -> dict[str, Any] | None:
        return self.read_record("slots", sha256_text(slot))

    def remember(self, slot: str, description: dict[str, Any]) -> None:
        if self.enabled:
            self.write_record("slots", sha256_text(slot), description)

    # -- small JSON records (miss reasons, model signatures) ------------------------------------
    def read_record(self, kind: str, name: str) -> Any:
        try:
            return json.loads((self.root / kind / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def write_record(self, kind: str, name: str, value: Any) -> None:
        path = self.root / kind / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(value, sort_keys=True))


def _check_file(path: Path, info: dict[str, Any]) -> str | None:
    try:
        stat = path.stat()
    except OSError:
        return f"{path.name} is missing"
    if stat.st_size == info["size"] and stat.st_mtime_ns == info["mtime_ns"]:
        return None
    if sha256_file(path) != info["sha256"]:
        return f"{path.name} does not match its sha256"
    return None


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
