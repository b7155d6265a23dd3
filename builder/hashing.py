"""Content digests: canonical JSON for step descriptions, sha256 for files and directories."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_atomically(path: Path, text: str) -> None:
    """Replaces `path` in one rename: a reader (another build) sees the old text or the new, never a part;
    the temporary file is this process's and thread's own, and is gone after a failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(root: Path, pattern: str = "*") -> list[Path]:
    """Every regular file under root matching pattern, relative, in a stable order."""
    return sorted(p.relative_to(root) for p in root.rglob(pattern) if p.is_file())


def digest_tree(files: dict[str, str]) -> str:
    """One digest for a set of files given as {relative path: sha256}."""
    return sha256_text(canonical_json(files))


class DigestMemo:
    """Remembers file digests by (path, size, mtime, ctime, inode) so an unchanged 100 MB checkpoint is not
    re-read on every build. Stored as JSON in the cache directory; a stale or unreadable memo only
    costs a re-hash."""

    def __init__(self, store: Path | None):
        self._store = store
        self._entries: dict[str, list] = {}
        self._dirty = False
        if store is not None and store.is_file():
            try:
                self._entries = json.loads(store.read_text())
            except (OSError, ValueError):
                self._entries = {}

    def file(self, path: Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        # ctime too: a same-size edit with its mtime put back (os.utime) still moves the ctime
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        cached = self._entries.get(str(path))
        if cached and cached[:3] == stamp:
            return cached[3]
        digest = sha256_file(path)
        self._entries[str(path)] = stamp + [digest]
        self._dirty = True
        return digest

    def path(self, path: Path, pattern: str = "*") -> str:
        """Digest of a file, or of every file matching pattern under a directory (a SavedModel, a
        package of model code)."""
        path = Path(path)
        if path.is_dir():
            return digest_tree({str(rel): self.file(path / rel) for rel in list_files(path, pattern)})
        return self.file(path)

    def save(self) -> None:
        if not self._dirty or self._store is None:
            return
        self._store.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self._store, json.dumps(self._entries))
        self._dirty = False
