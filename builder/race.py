"""target=auto's race: the candidates that passed are measured again in one sitting, in turns, each in
its own process (one SDK per process, as serve.py runs it) on its artifact's first stored sample. A
sweep's latencies were measured whenever each verify ran (cached, or while jobs competed for the
CPUs); these are measured side by side, so the choice compares like with like.

`python -m builder.race ARTIFACT` is one contestant: it loads the artifact's model, says it is ready,
then for each line `N` on stdin runs it N times and answers the N durations (JSON, one line)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_ROUNDS = 5
_WINDOW_S = 0.2  # each turn runs about this long (at least 3 runs, at most 200)
_LOAD_S = 600.0  # to load the SDK and the model and run it thrice


def race(artifacts: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """{name: {p50_ms, p99_ms, runs} or {error}}, the contestants measured in turns: every round gives each
    one window, so a change of load on the machine falls on all of them alike. A contestant that fails,
    dies or stops answering (_LOAD_S to load, a generous deadline per turn) is out, with why."""
    results: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = {name: [] for name in artifacts}
    procs: dict[str, subprocess.Popen] = {}
    logs = {name: tempfile.TemporaryFile("w+") for name in artifacts}
    try:
        for name, path in artifacts.items():
            procs[name] = subprocess.Popen([sys.executable, "-m", "builder.race", str(path)], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=logs[name], text=True, bufsize=1)
        for name, proc in procs.items():
            answer = _answer(proc, logs[name], _LOAD_S)
            if "error" in answer:
                results[name] = answer
        for _ in range(_ROUNDS):
            for name, proc in procs.items():
                if name in results:
                    continue
                slowest = max(times[name], default=_WINDOW_S)
                runs = max(3, min(200, round(_WINDOW_S / max(min(times[name], default=_WINDOW_S), 1e-6))))
                try:
                    proc.stdin.write(f"{runs}\n")
                except OSError:  # it died between turns
                    answer = _answer(proc, logs[name], 0)
                else:
                    answer = _answer(proc, logs[name], 60 + 10 * runs * slowest)
                if "error" in answer:
                    results[name] = answer
                else:
                    times[name] += answer["times"]
    finally:
        for proc in procs.values():
            _stop(proc)
        for log in logs.values():
            log.close()
    for name, measured in times.items():
        if name not in results:
            ordered = sorted(measured)
            results[name] = {"p50_ms": _percentile(ordered, 50) * 1e3, "p99_ms": _percentile(ordered, 99) * 1e3,
                             "runs": len(ordered)}
    return results


def _answer(proc: subprocess.Popen, log, timeout: float) -> dict[str, Any]:
    """The contestant's next line, or why there is none (it stopped answering within `timeout`, or died)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    try:
        return json.loads(line)
    except ValueError:
        silent = not ready and proc.poll() is None
        _stop(proc, at_once=True)
        if silent:
            return {"error": f"its model did not answer within {timeout:.0f} s"}
        log.seek(0)
        lines = [text.strip() for text in log.read().splitlines() if text.strip()]
        return {"error": f"its model did not run here (exit {proc.returncode}: {lines[-1] if lines else 'no output'})"}


def _stop(proc: subprocess.Popen, at_once: bool = False) -> None:
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=0 if at_once else 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _percentile(ordered: list[float], q: float) -> float:
    index = (len(ordered) - 1) * q / 100
    low = int(index)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def _contestant(artifact: Path) -> None:
    import time

    import numpy as np

    from backends import get_backend
    from builder.serving.accuracy import read_cases

    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what an SDK prints goes to stderr: stdout is this protocol's
    try:
        manifest = json.loads((artifact / "manifest.json").read_text())
        settings = manifest["runtime"]
        model = get_backend(settings["backend"]).runtime().load(artifact / settings["model_dir"], settings)
        with np.load(artifact / "samples.npz") as archive:
            feeds = read_cases(archive)[0]["input"]
        for _ in range(3):
            model.run(feeds)
    except Exception as exc:  # noqa: BLE001 - any failure to load or run is this contestant's answer
        answers.write(json.dumps({"error": f"its model did not run here ({type(exc).__name__}: {exc})"[:300]}) + "\n")
        return
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        durations = []
        for _ in range(int(line)):
            begin = time.perf_counter()
            model.run(feeds)
            durations.append(time.perf_counter() - begin)
        answers.write(json.dumps({"times": durations}) + "\n")


if __name__ == "__main__":
    _contestant(Path(sys.argv[1]))
