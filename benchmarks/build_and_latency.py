"""Issue-2 figures from one run: cold build vs no-op rebuild of a recipe, and the artifact's p50
latency vs torch eager fp32 on the same inputs (interleaved, medians: the machine is shared).

    .venv/bin/python benchmarks/build_and_latency.py [--recipe resnet50] [--target onnxruntime_fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed_build(args: list[str], cwd: Path, cache: Path) -> tuple[float, str]:
    env = {**os.environ, "MDBUILD_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "builder", *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"build failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout


def p50_interleaved(runners: dict, rounds: int, per_round: int) -> dict[str, float]:
    """Alternate blocks of runs of each candidate so that load from other tenants hits all alike."""
    for run in runners.values():
        for _ in range(10):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(per_round):
                begin = time.perf_counter()
                run()
                samples[name].append((time.perf_counter() - begin) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="resnet50")
    parser.add_argument("--target", default="onnxruntime_fp32")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    build_args = [f"+recipe={args.recipe}", f"target={args.target}"]

    with tempfile.TemporaryDirectory() as scratch:
        workdir, cache = Path(scratch) / "work", Path(scratch) / "cache"
        workdir.mkdir()
        cold, output = timed_build(build_args, workdir, cache)
        noop = statistics.median(timed_build(build_args, workdir, cache)[0] for _ in range(3))
        artifact = Path(output.strip().splitlines()[-1].split("artifact: ", 1)[1])
        print(f"cold build            {cold:8.2f} s")
        print(f"no-op rebuild (p50/3) {noop:8.2f} s")
        print(f"no-op / cold          {noop / cold:8.3f}   (target: < 0.05 and < 2 s)")

        import numpy as np
        import torch

        from backends import get_backend
        from builder.imports import resolve_callable

        manifest = json.loads((artifact / "manifest.json").read_text())
        model_cfg = manifest["config"]["model"]
        runtime = get_backend(manifest["runtime"]["backend"]).runtime()
        compiled = runtime.load(artifact / "model", manifest["runtime"])
        samples = np.load(artifact / "samples.npz")
        feeds = {spec["name"]: samples[f"input/{spec['name']}"][0] for spec in model_cfg["inputs"]}
        torch.manual_seed(model_cfg["seed"])
        eager = resolve_callable(model_cfg["factory"], workdir, "model.factory")(**model_cfg["kwargs"]).eval()
        tensors = [torch.from_numpy(feeds[spec["name"]]) for spec in model_cfg["inputs"]]

        def run_eager():
            with torch.inference_mode():
                eager(*tensors)

        medians = p50_interleaved({"artifact": lambda: compiled.run(feeds), "torch eager fp32": run_eager},
                                  rounds=args.rounds, per_round=20)
        print(f"torch threads {torch.get_num_threads()}, artifact runtime {manifest['runtime']}")
        for name, value in medians.items():
            print(f"p50 {name:<18} {value:8.2f} ms")
        print(f"artifact / torch eager {medians['artifact'] / medians['torch eager fp32']:7.3f}   (target: <= 0.7)")


if __name__ == "__main__":
    main()
