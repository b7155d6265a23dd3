"""What the user sees while building: one line per step, a live timer and the step's own progress
for long steps (redrawn in place on a terminal, a heartbeat line every few seconds in a log)."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

_HEARTBEAT_S = 10.0


class Console:
    def __init__(self, stream: TextIO | None = None, heartbeat_s: float = _HEARTBEAT_S):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.heartbeat_s = heartbeat_s
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _status(self, text: str) -> None:
        with self._lock:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()

    @contextmanager
    def step(self, label: str) -> Iterator[Callable[[str], None]]:
        """Times a running step; yields a function the step calls to report what it is doing."""
        started = time.monotonic()
        state = {"message": "", "printed": started}
        done = threading.Event()

        def report(message: str) -> None:
            state["message"] = message

        def tick() -> None:
            while not done.wait(0.25 if self.tty else min(1.0, self.heartbeat_s)):
                elapsed = time.monotonic() - started
                if self.tty:
                    self._status(f"{label}  {elapsed:5.1f}s  {state['message']}")
                elif time.monotonic() - state["printed"] >= self.heartbeat_s:
                    state["printed"] = time.monotonic()
                    self.line(f"{label}  ... {elapsed:.0f}s  {state['message']}")

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield report
        finally:
            done.set()
            ticker.join()
            if self.tty:
                self._status("")
                with self._lock:
                    self.stream.write("\r\033[K")
