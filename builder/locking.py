"""Inter-process locks: flock(2), which the kernel releases when its holder dies (kill -9 included),
so a killed build never leaves a lock behind to wait on.

`exclusive(directory)` serializes the read-change-replace of a shared file in that directory (the lock
file of a recipe) by locking the directory itself: nothing is left beside the user's recipes. A
`Lease` is a lock file that also says who holds it (pid, host, since when), for the message of the
process that waits. The filelock package locks files only, hence these few lines of fcntl."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Holds an exclusive lock on `directory` (which must exist) for the duration."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def lease(path: Path, waiting: Callable[[str], None]) -> Iterator[None]:
    """Holds the lease at `path`; while another process holds it, calls `waiting` once with who that is
    and blocks until it is released (or its holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting(_holder(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner, 0)
        yield
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        owner = json.loads(path.read_text())
        return f"pid {owner['pid']} on {owner['host']}, for {time.time() - owner['since']:.0f} s"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
