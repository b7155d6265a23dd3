"""Shared by the benchmark scripts: run mdbuild, and time candidates fairly on a shared machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@contextmanager
def ray_head(env: dict, cpus: int, gpus: int = 0) -> Iterator[str]:
    """A Ray head node on this machine (its address), declaring `gpus` GPUs (Ray schedules by what a node
    declares), ended after: `ray start --block` in a session of its own, whose processes alone are ended
    (`ray stop` would end every Ray on the machine). Ray replaces 127.0.0.1 with the host's address."""
    ray = str(Path(sys.executable).with_name("ray"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {**os.environ, **env}
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                             "--include-dashboard=false", "--disable-usage-stats"], env=environment,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([ray, "status", f"--address=127.0.0.1:{port}"], env=environment, capture_output=True).returncode:
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Ray head node did not start")
            time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        end_session(head)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


@contextmanager
def torchserve(archives: dict[str, Path], workdir: Path, workers: int = 1) -> Iterator[str]:
    """A real TorchServe (Java) serving model archives ({model name: .mar}) on 127.0.0.1 (its inference
    address), once every model's workers are ready; token authorization off; ended with its whole
    session after."""
    store = workdir / "model-store"
    store.mkdir()
    for name, archive in archives.items():
        shutil.copyfile(archive, store / f"{name}.mar")
    inference, management, metrics, grpc_inference, grpc_management, worker = free_ports(6)
    (workdir / "tmp").mkdir(exist_ok=True)
    config = workdir / "config.properties"
    config.write_text("\n".join([
        f"inference_address=http://127.0.0.1:{inference}", f"management_address=http://127.0.0.1:{management}",
        f"metrics_address=http://127.0.0.1:{metrics}", f"grpc_inference_port={grpc_inference}",
        f"grpc_management_port={grpc_management}", f"initial_worker_port={worker}", "disable_token_authorization=true",
        f"default_workers_per_model={workers}", "install_py_dep_per_model=false"]) + "\n")
    log = workdir / "torchserve.log"
    # TorchServe writes logs and a key file where it starts: workdir, never the artifact.
    server = subprocess.Popen([str(Path(sys.executable).with_name("torchserve")), "--start", "--foreground", "--ncs",
                               "--model-store", str(store), "--ts-config", str(config), "--models",
                               *(f"{name}={name}.mar" for name in archives)],
                              cwd=workdir, env={**os.environ, "TMPDIR": str(workdir / "tmp")}, start_new_session=True, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not all(_torchserve_ready(management, name) for name in archives):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("TorchServe did not become ready: " + log.read_text()[-3000:])
            time.sleep(1)
        yield f"http://127.0.0.1:{inference}"
    finally:
        end_session(server)


def _torchserve_ready(management: int, name: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{management}/models/{name}", timeout=10) as answer:
            workers = json.loads(answer.read())[0]["workers"]
    except OSError:
        return False
    return bool(workers) and all(worker["status"] == "READY" for worker in workers)


def end_session(process: subprocess.Popen) -> None:
    """Ends a process started with start_new_session=True and every process of its session: SIGTERM, then
    SIGKILL for whatever did not end (a server's workers)."""
    for ending in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, ending)
        except ProcessLookupError:
            break
        time.sleep(3)
    process.wait(timeout=30)


def print_host() -> None:
    """The CPU the figures come from: its model and the flags that change numerics and speed."""
    from builder.serving.host import describe_cpu

    print(f"cpu: {describe_cpu()}")


def mdbuild(args: list[str], cwd: Path, cache: Path) -> tuple[float, str]:
    """(wall seconds, stdout) of one mdbuild run; exits on failure."""
    env = {**os.environ, "MDBUILD_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "builder", *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"build failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout


def artifacts(stdout: str) -> list[Path]:
    return [Path(line.split("artifact: ", 1)[1]) for line in stdout.splitlines() if line.startswith("artifact: ")]


def load_artifact(artifact: Path, largest: bool = False):
    """(the artifact's model loaded as serve.py loads it, the inputs of its first verification case, or
    of its largest, its manifest)."""
    import numpy as np

    from backends import get_backend

    manifest = json.loads((artifact / "manifest.json").read_text())
    model = get_backend(manifest["runtime"]["backend"]).runtime().load(artifact / manifest["runtime"]["model_dir"], manifest["runtime"])
    samples = np.load(artifact / "samples.npz")
    names = [spec["name"] for spec in manifest["config"]["model"]["inputs"]]
    cases = sorted({int(key.split("/")[0]) for key in samples.files}) if largest else [0]
    # The first of the largest: a perturbed copy of a case comes after it.
    case = max(cases, key=lambda case: (sum(samples[f"{case}/input/{name}"].size for name in names), -case))
    feeds = {name: samples[f"{case}/input/{name}"] for name in names}
    return model, feeds, manifest


def torch_eager(manifest: dict, feeds: dict, workdir: Path) -> Callable[[], None]:
    """The source model in torch eager fp32, built as the recipe builds it, on the same inputs."""
    import torch

    from builder.imports import resolve_callable

    model_cfg = manifest["config"]["model"]
    torch.manual_seed(model_cfg["seed"])
    eager = resolve_callable(model_cfg["factory"], workdir, "model.factory")(**model_cfg["kwargs"]).eval()
    tensors = [torch.from_numpy(feeds[spec["name"]]) for spec in model_cfg["inputs"]]

    def run() -> None:
        with torch.inference_mode():
            eager(*tensors)

    return run


def interleaved(runners: dict[str, Callable[[], object]], rounds: int, per_round: int = 20) -> dict[str, list[list[float]]]:
    """Latencies (ms) of each candidate, round by round: blocks of runs alternate so that load from
    other tenants of the machine falls on all of them alike."""
    for run in runners.values():
        for _ in range(10):
            run()
    samples: dict[str, list[list[float]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            block = []
            for _ in range(per_round):
                begin = time.perf_counter()
                run()
                block.append((time.perf_counter() - begin) * 1e3)
            samples[name].append(block)
    return samples


def p50_interleaved(runners: dict[str, Callable[[], object]], rounds: int, per_round: int = 20) -> dict[str, float]:
    """Median latency (ms) of each candidate over all its interleaved runs."""
    samples = interleaved(runners, rounds, per_round)
    return {name: statistics.median(t for block in blocks for t in block) for name, blocks in samples.items()}
