"""Issue-15 figures: one sweep of a recipe's targets run sequentially, on joblib's processes and on a
local Ray cluster, each from an empty cache; then the same sweep with a shared remote cache (moto's S3
server on 127.0.0.1): cold, and again from a fresh local cache with the remote warm.

    .venv/bin/python benchmarks/sweep_scaling.py [--recipe resnet50] [--targets a,b,...] [--modes sequential,joblib,ray]

Per mode: the wall time, the seconds the steps themselves took (summed over jobs), and the time outside
steps per job: (wall x workers - step seconds) / jobs, which holds scheduling, process start, imports,
planning and hashing, and, with parallel workers, the time a worker idles waiting for another's step.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_host, ray_head

TARGETS = ["onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_fp16", "openvino_bf16", "openvino_int8"]
BIN = Path(sys.executable).parent
WORKERS = 2  # this machine's cores: the ceiling of any launcher here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="resnet50")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--modes", default="sequential,joblib,ray")
    parser.add_argument("--set", action="append", default=[], help="a Hydra override for every job")
    args = parser.parse_args()
    print_host()
    sweep = ["-m", f"+recipe={args.recipe}", f"target={args.targets}", *args.set]
    jobs = len(args.targets.split(","))
    launchers = {"sequential": [], "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={WORKERS}"],
                 "ray": ["hydra/launcher=ray_cluster"]}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        baseline = None
        for mode in args.modes.split(","):
            env = {}
            with contextlib.ExitStack() as stack:
                if mode == "ray":  # a home of its own: Ray's token authentication reads ~/.ray/auth_token
                    (root / "home").mkdir(exist_ok=True)
                    env = {"HOME": str(root / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
                    env["RAY_ADDRESS"] = stack.enter_context(ray_head(env, WORKERS))
                wall, output = _sweep(sweep + launchers[mode], root / mode, env)
            steps = sum(float(seconds) for seconds in re.findall(r"\] \w+\s+done\s+([\d.]+)s", output))
            workers = 1 if mode == "sequential" else WORKERS
            baseline = baseline or wall
            print(f"{mode:<10} {jobs} jobs: {wall:6.1f} s wall ({baseline / wall:.2f}x sequential), steps {steps:6.1f} s, "
                  f"outside steps {(wall * workers - steps) / jobs:5.1f} s per job")
        _remote(sweep, root / "remote", jobs)


def _sweep(args: list[str], root: Path, env: dict, cache: Path | None = None) -> tuple[float, str]:
    (root / "work").mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "MDBUILD_CACHE_DIR": str(cache or root / "cache"), **env}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "builder", *args], cwd=root / "work", env=environment,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started, proc.stdout


def _remote(sweep: list[str], root: Path, jobs: int) -> None:
    """Cold with the remote, then a fresh machine (empty local cache) with the remote warm."""
    port = _free_port()
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        import s3fs

        os.environ.update(credentials)
        for _ in range(100):
            try:
                s3fs.S3FileSystem(endpoint_url=f"http://127.0.0.1:{port}", skip_instance_cache=True).mkdir("bench")
                break
            except Exception:
                time.sleep(0.2)
        remote = [*sweep, "cache.remote=s3://bench/mdbuild", f"+cache.remote_options.endpoint_url=http://127.0.0.1:{port}"]
        cold, cold_out = _sweep(remote, root / "one", credentials)
        warm, warm_out = _sweep(remote, root / "two", credentials)
    finally:
        server.terminate()
        server.wait()
    moved = lambda out, kind: sum(float(mb) for mb in re.findall(rf"([\d.]+) MB {kind}", out))  # noqa: E731
    print(f"remote cold {jobs} jobs: {cold:6.1f} s, {moved(cold_out, 'uploaded'):.1f} MB uploaded")
    print(f"remote warm, fresh local cache: {warm:6.1f} s ({warm / cold:.1%} of the cold sweep), "
          f"{moved(warm_out, 'downloaded'):.1f} MB downloaded, steps run: {warm_out.count(' running ')}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
