"""Inter-process locks: flock(2), which the kernel releases when its holder dies (kill -9 included),
so a killed build never leaves a lock behind to wait on.

`exclusive(directory)` serializes the read-change-replace of a shared file in that directory (the lock
file of a recipe) by locking the directory itself: nothing is left beside the user's recipes. A
lease is a lock file that also says who holds it (pid, host, since when), for the message of the process
that waits, and whether its step failed, so that the waiters do not each repeat a failure in turn. The
filelock package locks files only, hence these few lines of fcntl (POSIX: Linux, macOS).

On NFS a lock on a directory is local to one host (Linux's NFS client has no flock for directories);
the leases, regular files, are locks on the server under NFSv4."""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from builder.errors import MdbuildError


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Holds an exclusive lock on `directory` (which must exist) for the duration."""
    fcntl = _fcntl()
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _fcntl():
    try:
        import fcntl
    except ImportError:
        raise MdbuildError("builds lock shared files with fcntl, which this system lacks", "cache.dir",
                           "build on Linux or macOS (Windows: under WSL)") from None
    return fcntl


class Held:
    """A lease while held: what its previous holder recorded (`previous`: pid, host, since, and
    `failed`, the first line of its error, when its step failed), and `note` to record for the next."""

    def __init__(self, fd: int | None, previous: dict):
        self.fd, self.previous = fd, previous
        self.fields = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        self.note()

    def note(self, **fields) -> None:
        if self.fd is None:  # a lease file this user may read but not write: locked, nothing recorded
            return
        self.fields.update(fields)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(self.fields).encode(), 0)


# A build waiting for a lease says so again this often (a CI log that went silent looks hung).
_HEARTBEAT_S = 60.0


@contextmanager
def lease(path: Path, waiting: Callable[[str], None]) -> Iterator[Held]:
    """Holds the lease at `path`; while another process holds it, calls `waiting` with who that is (then
    every minute) until it is released or its holder dies."""
    fcntl = _fcntl()

    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # 0o666 less the umask: a cache shared by a group stays usable by the group
        fd, writable = os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except PermissionError:
        fd, writable = os.open(path, os.O_RDONLY), False
    try:
        said = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if said is None or time.monotonic() - said >= _HEARTBEAT_S:
                    waiting(_holder(path))
                    said = time.monotonic()
                time.sleep(0.1)
        yield Held(fd if writable else None, _read(path))
    finally:
        os.close(fd)


class Unshared(Held):
    """The lease of a build whose cache is its own (cache.enabled=false): nothing to wait for."""

    def __init__(self):
        super().__init__(None, {})


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder(path: Path) -> str:
    owner = _read(path)
    try:
        return f"pid {owner['pid']} on {owner['host']}, for {time.time() - owner['since']:.0f} s"
    except (KeyError, TypeError):
        return "another process"
