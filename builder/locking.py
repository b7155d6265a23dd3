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

import errno
import json
import os
import socket
import time
from contextlib import contextmanager, suppress
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
    every minute) until it is released or its holder dies. Its holder removes it on the way out, under
    the lock: a process that then locks the removed file takes its record (a failure noted, which the
    builds that waited honour) and locks the path anew. Only a killed holder's file stays."""
    said = [None]

    def wait() -> None:
        if said[0] is None or time.monotonic() - said[0] >= _HEARTBEAT_S:
            waiting(_holder(path))
            said[0] = time.monotonic()
        time.sleep(0.1)

    carried: dict = {}
    while True:
        fd, writable = _open(path)
        try:
            _lock(fd, wait)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError) and exc.errno == errno.ESTALE:
                continue  # NFS: the file was removed on the server while this host held it open
            raise
        if not writable or _is_at(fd, path):
            break
        carried = _read(fd) or carried  # removed by its holder: its record (a failure) is for the builds that waited
        os.close(fd)
    try:
        held = Held(fd if writable else None, _read(fd) or carried)
        yield held
    finally:
        if writable and _is_at(fd, path):
            with suppress(OSError):  # already gone (a cleaned cache): nothing to remove
                os.unlink(path)
        os.close(fd)


def _open(path: Path) -> tuple[int, bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # 0o666 less the umask: a cache shared by a group stays usable by the group
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except PermissionError:
        return os.open(path, os.O_RDONLY), False


def _lock(fd: int, wait: Callable[[], None]) -> None:
    fcntl = _fcntl()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            wait()


def _is_at(fd: int, path: Path) -> bool:
    """Whether the locked file is still the one at `path`."""
    try:
        at = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at.st_dev, at.st_ino)


class Unshared(Held):
    """The lease of a build whose cache is its own (cache.enabled=false): nothing to wait for."""

    def __init__(self):
        super().__init__(None, {})


def _read(where: Path | int) -> dict:
    """The record of a lease, by path or by descriptor."""
    try:
        text = where.read_bytes() if isinstance(where, Path) else os.pread(where, 1 << 16, 0)
        record = json.loads(text)
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder(path: Path) -> str:
    owner = _read(path)
    try:
        return f"pid {owner['pid']} on {owner['host']}, for {time.time() - owner['since']:.0f} s"
    except (KeyError, TypeError):
        return "another process"


def free_leases(directory: Path) -> int:
    """Removes the lease files under `directory` that no process holds (their step ended, failed or was
    killed); each under its lock, so a build that takes it meanwhile locks the path anew. How many."""
    fcntl = _fcntl()
    removed = 0
    for path in directory.rglob("*") if directory.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue  # a folder, gone meanwhile, or not ours to change
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _is_at(fd, path):
                os.unlink(path)
                removed += 1
        except OSError:
            pass  # held: a build is computing its key
        finally:
            os.close(fd)
    return removed
