"""Latency measured the way a careful person would: warm up, then measure in windows until two
consecutive windows agree on the median (or the run/time budget is spent)."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

_WINDOW = 20


def measure(run: Callable[[], Any], cfg: dict[str, Any], items_per_run: int,
            progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    for _ in range(cfg["warmup_runs"]):
        run()
    times: list[float] = []
    previous_p50 = None
    stable = False
    started = time.perf_counter()
    while len(times) < cfg["max_runs"]:
        window = []
        for _ in range(_WINDOW):
            begin = time.perf_counter()
            run()
            window.append(time.perf_counter() - begin)
        times.extend(window)
        p50 = float(np.median(window))
        progress(f"latency: {len(times)} runs, window p50 {p50 * 1e3:.2f} ms")
        if previous_p50 is not None and len(times) >= cfg["min_runs"]:
            if abs(p50 - previous_p50) <= cfg["stable_within"] * previous_p50:
                stable = True
                break
        previous_p50 = p50
        if time.perf_counter() - started > cfg["max_seconds"]:
            break
    values = np.array(times) * 1e3
    return {
        "runs": len(times),
        "stable": stable,
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
        "throughput_per_s": float(items_per_run * 1e3 / values.mean()),
        "items_per_run": items_per_run,
    }
