"""The shared remote tier of the cache (`cache.remote=s3://bucket/prefix`, `gs://...`, `file://...`),
through fsspec, the way Bazel's remote cache shares actions between machines.

Layout beside the local cache's: `<prefix>/entries/<k[:2]>/<key>/out/<files>` and, written last,
`<prefix>/entries/<k[:2]>/<key>/meta.json`: an entry exists for readers only once its manifest does,
so an upload cut short is never a hit. A local miss reads through: the manifest at once, the files when
something reads them, each checked against its sha256 before the entry is committed to the local cache
(a damaged, half-written or unreachable remote entry is a miss, with a warning). A step that ran is
pushed after it succeeded.

Across hosts a key is built once where the store can create an object only if it is absent (S3's
If-None-Match, a local file system's O_EXCL): `<prefix>/leases/<k[:2]>/<key>` holds who builds it (and
a token: only its holder renews or removes it), renewed while the step runs. A waiter that sees it
unchanged for _EXPIRES_S by its own clock takes it over (its holder died). Two builds that take over a
dead lease at once may both build the key: the entries are identical by construction, and the first
commit wins.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from builder.errors import MdbuildError, first_line
from builder.hashing import sha256_file

USED = "used"  # beside an entry's out/ and meta.json: written on each download
_RENEW_S = 30.0
_EXPIRES_S = 120.0
_POLL_S = 1.0


class Remote:
    def __init__(self, url: str, options: dict[str, Any], key: str = "cache.remote"):
        """`key`: what names the remote in errors (cache.remote, or a command's --remote)."""
        try:
            import fsspec

            if fsspec.utils.get_protocol(url) in ("file", "local"):
                options = {"auto_mkdir": True, **options}  # leases and entries go in folders made as needed
            self.fs, self.root = fsspec.url_to_fs(url, **options)
        except (ImportError, ValueError, TypeError) as exc:
            raise MdbuildError(f"cannot open {url}: {first_line(exc)}", key,
                               "give s3://bucket/prefix, gs://bucket/prefix or file:///path (pip install s3fs or "
                               "gcsfs for the clouds); storage options go in cache.remote_options") from exc
        self.url, self.key = url, key
        self.downloaded = self.uploaded = 0  # bytes, for the build's summary line
        self.warnings: list[str] = []

    def check(self) -> None:
        """The store answers (credentials, endpoint) and its bucket exists (a build does not create buckets;
        a local directory it does): one line naming cache.remote if not."""
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        try:
            if protocols & {"file", "local"}:
                self.fs.makedirs(self.root, exist_ok=True)
                return
            bucket = self.root.split("/", 1)[0]
            if not self.fs.exists(bucket):
                raise FileNotFoundError(f"no bucket '{bucket}'")
        except Exception as exc:  # noqa: BLE001 - every client error (auth, network, no bucket) ends here
            raise MdbuildError(f"cannot reach {self.url}: {type(exc).__name__}: {first_line(exc)}", self.key,
                               "check the URL, the credentials (AWS_* variables for S3) and "
                               "cache.remote_options (endpoint_url for an S3-compatible server); the bucket must exist") from exc

    def _warn(self, text: str) -> None:
        """Once per build line: a waiter polling an unreachable store would say the same every second."""
        if text not in self.warnings:
            self.warnings.append(text)

    def _entry(self, key: str) -> str:
        return f"{self.root}/entries/{key[:2]}/{key}"

    def manifest(self, key: str) -> dict[str, Any] | None:
        """The entry's manifest, or None when the remote has no complete entry of `key`."""
        try:
            return json.loads(self.fs.cat_file(f"{self._entry(key)}/meta.json"))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - network, permission, a garbled manifest: a miss, said once
            self._warn(f"remote cache: cannot read the manifest of {key[:12]} ({type(exc).__name__}: "
                                 f"{first_line(exc)}); building it here")
            return None

    def fetch(self, key: str, into: Path) -> dict[str, Any] | None:
        """Downloads the entry of `key` into `into` (its out/ files), each checked against its sha256;
        returns its manifest, or None (no entry, or a damaged one: a warning says which)."""
        meta = self.manifest(key)
        if meta is None:
            return None
        try:
            for rel, info in meta["files"].items():
                if not _inside(rel):  # a manifest naming ../x or /x would write outside the entry
                    self._warn(f"remote cache: the manifest of {key[:12]} names {rel!r}, outside its entry; "
                                         "building it here")
                    return None
                local = into / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{self._entry(key)}/out/{rel}", str(local))
                if sha256_file(local) != info["sha256"]:
                    self._warn(f"remote cache: {rel} of {key[:12]} does not match its sha256; building it here")
                    return None
                self.downloaded += local.stat().st_size
        except Exception as exc:  # noqa: BLE001 - network, permission, a malformed manifest: a miss
            self._warn(f"remote cache: cannot download {key[:12]} ({type(exc).__name__}: {first_line(exc)}); "
                                 "building it here")
            return None
        try:  # its last use, for `mdbuild cache gc --on-remote` (a store's objects keep only when they were written)
            self.fs.pipe_file(f"{self._entry(key)}/{USED}", json.dumps({"host": _HOST, "time": time.time()}).encode())
        except Exception:  # noqa: BLE001 - read-only credentials: the entry is still used, only not marked
            pass
        return meta

    def push(self, key: str, out: Path, meta: dict[str, Any], replace: bool = False) -> bool:
        """Uploads an entry's files, each checked against its sha256 first, then its manifest (the entry
        exists for readers from then on); nothing when the remote has it already, unless `replace` (its
        copy there is damaged). Whether it uploaded; a failure is a warning: the build has its entry."""
        if replace:
            _remove(self.fs, f"{self._entry(key)}/meta.json")  # not a hit while its files are replaced
        elif self.manifest(key) is not None:
            return False
        try:
            for rel, info in meta["files"].items():
                if sha256_file(out / rel) != info["sha256"]:
                    self._warn(f"remote cache: {rel} of {key[:12]} does not match its sha256 here; not uploaded")
                    return False
                self.fs.put_file(str(out / rel), f"{self._entry(key)}/out/{rel}")
                self.uploaded += (out / rel).stat().st_size
            self.fs.pipe_file(f"{self._entry(key)}/meta.json", json.dumps(meta, sort_keys=True).encode())
            return True
        except Exception as exc:  # noqa: BLE001 - network and permission errors alike
            self._warn(f"remote cache: cannot upload {key[:12]} ({type(exc).__name__}: {first_line(exc)})")
            return False

    def stored(self) -> list[dict[str, Any]]:
        """Every entry of the remote tier from one listing: key, bytes, last use (its newest object: the manifest's
        upload, the last download's mark, or for an entry without a manifest its newest file), complete, whether
        a build may hold its lease (_live), and its objects with their times (what `remove` compares)."""
        found: dict[str, dict[str, Any]] = {}
        prefix = f"{self.root}/entries/"
        for path, info in self.fs.find(prefix, detail=True).items():
            parts = path[path.index(prefix) + len(prefix):].split("/") if prefix in path else []
            if len(parts) < 3:
                continue
            entry = found.setdefault(parts[1], {"key": parts[1], "size": 0, "used": 0.0, "complete": False,
                                                "leased": False, "objects": {}})
            name = "/".join(parts[2:])
            entry["complete"] |= name == "meta.json"
            entry["size"] += (info.get("size") or 0) if name.startswith("out/") else 0
            entry["used"] = max(entry["used"], modified(info) or time.time())  # a store that does not say: just used
            entry["objects"][path] = modified(info)
        for path, info in self._leases().items():
            key = path.rsplit("/", 1)[-1]
            if key in found and _live(info):
                found[key]["leased"] = True
        return sorted(found.values(), key=lambda entry: entry["key"])

    def remove(self, key: str, seen: dict[str, float]) -> bool:
        """Removes an entry, manifest first (from then on it is a miss: a build reading it meanwhile builds it),
        unless a build took its lease or wrote to it since it was listed with the objects `seen` (a re-upload of
        an entry cut short; compared by the store's own times, whatever this machine's clock says): whether it
        removed it."""
        if any(_live(info) for info in self._leases(key).values()):
            return False
        try:
            objects = self.fs.find(self._entry(key), detail=True)
        except FileNotFoundError:
            return False
        if {path: modified(info) for path, info in objects.items()} != seen:
            return False
        _remove(self.fs, f"{self._entry(key)}/meta.json")
        try:
            self.fs.rm(self._entry(key), recursive=True)
        except FileNotFoundError:
            pass
        return True

    def free_leases(self) -> int:
        """Removes leases not renewed for 10 times their expiry (their holders are long gone); how many."""
        removed = 0
        for path, info in self._leases().items():
            if not _live(info):
                _remove(self.fs, path)
                removed += 1
        return removed

    def _leases(self, key: str | None = None) -> dict[str, dict[str, Any]]:
        where = f"{self.root}/leases/{key[:2]}/{key}" if key else f"{self.root}/leases/"
        try:
            return self.fs.find(where, detail=True)
        except FileNotFoundError:
            return {}

    @contextmanager
    def lease(self, key: str, waiting: Callable[[str], None]) -> Iterator[bool]:
        """Holds the remote lease of `key` (yields True), or yields False: another host's entry of it is
        complete (nothing to build), or the store cannot give a lease (no exclusive create, no write
        permission, unreachable: the build goes on without, and may repeat another host's work)."""
        path = f"{self.root}/leases/{key[:2]}/{key}"
        record = {"host": _HOST, "pid": os.getpid(), "token": uuid.uuid4().hex, "renewed": time.time()}
        said, seen, since = None, None, time.monotonic()
        while True:
            try:
                self.fs.pipe_file(path, json.dumps(record).encode(), mode="create")
                break
            except FileExistsError:
                pass
            except Exception as exc:  # noqa: BLE001 - no exclusive create, read-only credentials, network
                self._warn(f"remote cache: no lease on {key[:12]} ({type(exc).__name__}: {first_line(exc)}); "
                                     "building without one")
                yield False
                return
            if self.manifest(key) is not None:
                yield False
                return
            text = _cat(self.fs, path)
            if text != seen:  # renewed (or another holder): its holder is alive; judged by this host's clock
                seen, since = text, time.monotonic()
            elif time.monotonic() - since > _EXPIRES_S:
                _remove(self.fs, path)  # not renewed for _EXPIRES_S (an empty record too): its holder died
                continue
            if said is None or time.monotonic() - said >= 60:
                holder = _parse(text)
                who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another host"
                waiting(f"{who}, through {self.url}")
                said = time.monotonic()
            time.sleep(_POLL_S)
        stop = threading.Event()
        renewer = threading.Thread(target=_renew, args=(self.fs, path, record, stop), daemon=True)
        renewer.start()
        try:
            yield True
        finally:
            stop.set()
            renewer.join()
            if (_parse(_cat(self.fs, path)) or {}).get("token") == record["token"]:  # not a holder that took it over
                _remove(self.fs, path)


def _inside(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return bool(parts) and not PurePosixPath(rel).is_absolute() and ".." not in parts and "\\" not in rel


_HOST = socket.gethostname()


def _renew(fs, path: str, record: dict[str, Any], stop: threading.Event) -> None:
    while not stop.wait(_RENEW_S):
        if (_parse(_cat(fs, path)) or {}).get("token") != record["token"]:
            return  # taken over (this host stalled past the expiry): the new holder's now
        record["renewed"] = time.time()
        try:
            fs.pipe_file(path, json.dumps(record).encode())
        except Exception:  # noqa: BLE001 - a missed renewal only lets another host take the key over
            pass


def _live(lease: dict[str, Any]) -> bool:
    """Whether a lease file may still be held: written within 10 times the expiry by the store's clock against
    this machine's (a generous margin for skewed clocks; a store that does not say when: held)."""
    when = modified(lease)
    return not when or time.time() - when < 10 * _EXPIRES_S


def modified(info: dict[str, Any]) -> float:
    """When an object was last written, from a listing's details (S3: LastModified, a local file system:
    mtime, GCS: updated); 0 when the store does not say."""
    for name in ("LastModified", "mtime", "updated", "last_modified"):
        value = info.get(name)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def _cat(fs, path: str) -> bytes | None:
    try:
        return fs.cat_file(path)
    except Exception:  # noqa: BLE001 - gone, or unreadable: the caller waits and looks again
        return None


def _parse(text: bytes | None) -> dict[str, Any] | None:
    try:
        record = json.loads(text) if text else None
        return record if isinstance(record, dict) else None
    except ValueError:
        return None


def _remove(fs, path: str) -> None:
    try:
        fs.rm_file(path)
    except Exception:  # noqa: BLE001 - gone already, or not ours to remove
        pass
