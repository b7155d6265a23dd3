"""Issue-14 figures: builds killed at random moments, same-size corruptions of cache entries, and
concurrent builds on one cache and one repository; prints the counts that must be zero.

    .venv/bin/python benchmarks/torture_build.py [--kills 40] [--corruptions 10] [--concurrent 4] [--trials 50] [--builds 5]

Every build is the shipped `tiny` recipe (SqueezeNet 1.1, seconds) with `verify=quick`; a kill trial
uses its own `model.seed` so that it starts from an empty key and can die in any step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_host

from builder.hashing import sha256_file

TARGETS = ["onnxruntime_fp32", "openvino_fp32", "openvino_fp16"]
# The targets of the concurrent different builds: each one writes its own entry into one lock file.
DIFFERENT = [*TARGETS, "openvino_bf16", "pytorch"]
BUILD = [sys.executable, "-m", "builder", "+recipe=tiny", "verify=quick"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--corruptions", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--builds", type=int, default=5, choices=range(2, len(DIFFERENT) + 1),
                        help="different targets built at once in each trial")
    args = parser.parse_args()
    print_host()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as scratch:
        work, cache = Path(scratch) / "work", Path(scratch) / "cache"
        (work / "recipes").mkdir(parents=True)
        env = {**os.environ, "MDBUILD_CACHE_DIR": str(cache)}
        killed = _kills(args.kills, work, env, rng)
        broken = sum(_run(work, env, f"model.seed={seed}", f"target={target}").returncode != 0 for seed, target in killed)
        print(f"{len(killed)} builds killed with SIGKILL at random moments; rebuilt: {broken} failed; "
              f"entries whose files do not match their sha256: {_corrupt_entries(cache)}; "
              f"work directories left after the rebuilds: {len(list((cache / 'tmp').glob('*')))}")
        trusted = _corruptions(args.corruptions, work, cache, env, killed, rng)
        print(f"{args.corruptions} same-size corruptions (mtime kept) of entries a rebuild reads: {trusted} used as they were")
        runs = _identical(args.concurrent, Path(scratch) / "identical")
        print(f"{args.concurrent} identical builds at once on an empty cache: {runs} step runs (5 steps)")
        lost, failed = _different(args.trials, DIFFERENT[:args.builds], Path(scratch) / "different")
        print(f"{args.trials} trials of {args.builds} targets built at once: {lost} lock entries lost, {failed} builds failed")


def _run(work: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BUILD, *overrides], cwd=work, env=env, capture_output=True, text=True, timeout=900)


def _kills(count: int, work: Path, env: dict, rng: random.Random) -> list[tuple[int, str]]:
    """Starts each build and kills it after a random 0-8 s (some finish first); its (seed, target)."""
    done = []
    for seed in range(count):
        target = rng.choice(TARGETS)
        proc = subprocess.Popen([*BUILD, f"model.seed={seed}", f"target={target}"], cwd=work, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, 8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done.append((seed, target))
    return done


def _corrupt_entries(cache: Path) -> int:
    bad = 0
    for meta in (cache / "entries").glob("*/*/meta.json"):
        files = json.loads(meta.read_text())["files"]
        bad += any(sha256_file(meta.parent / "out" / rel) != info["sha256"] for rel, info in files.items())
    return bad


def _corruptions(count: int, work: Path, cache: Path, env: dict, builds: list, rng: random.Random) -> int:
    """Flips a byte of the export entry of a built (seed, target), keeping size and mtime, removes the
    artifact, rebuilds another target from it: the damaged bytes must not reach the new artifact."""
    trusted = 0
    for seed, target in rng.sample(builds, min(count, len(builds))):
        exports = [meta for meta in (cache / "entries").glob("*/*/meta.json")
                   for description in [json.loads(meta.read_text())["description"]]
                   if description.get("step") == "export" and description["config"]["model"]["seed"] == seed]
        if not exports:
            continue
        model = exports[0].parent / "out" / "model.onnx"
        stat = model.stat()
        data = bytearray(model.read_bytes())
        data[rng.randrange(len(data))] ^= 0xFF
        model.write_bytes(bytes(data))
        os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        other = next(t for t in TARGETS if t != target)
        result = _run(work, env, f"model.seed={seed}", f"target={other}")
        rebuilt = "export        running" in result.stdout
        trusted += result.returncode != 0 or not rebuilt
    return trusted


def _identical(count: int, root: Path) -> int:
    (root / "recipes").mkdir(parents=True)
    env = {**os.environ, "MDBUILD_CACHE_DIR": str(root / "cache")}
    builds = [subprocess.Popen(BUILD, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
              for _ in range(count)]
    outputs = [build.communicate(timeout=900)[0] for build in builds]
    return sum(out.count(" running ") for out in outputs)


def _different(trials: int, targets: list[str], root: Path) -> tuple[int, int]:
    (root / "recipes").mkdir(parents=True)
    env = {**os.environ, "MDBUILD_CACHE_DIR": str(root / "cache")}
    for target in targets:  # every target cached: the builds race on the lock file only
        if _run(root, env, f"target={target}").returncode != 0:
            sys.exit(f"the build of target={target} failed before the trials")
    lock = root / "recipes" / "tiny.lock.json"
    lost = failed = 0
    for _ in range(trials):
        lock.unlink(missing_ok=True)
        builds = [subprocess.Popen([*BUILD, f"target={target}"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) for target in targets]
        failed += sum(build.wait(timeout=900) != 0 for build in builds)
        lost += len(targets) - len(json.loads(lock.read_text())["targets"])
    return lost, failed


if __name__ == "__main__":
    main()
