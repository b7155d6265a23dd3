"""Sweeps through Hydra's own launcher plugins (issue 15): joblib's processes on this machine, and a
real local Ray cluster (`ray start --head`, stopped by the test). Every job shares the cache (the
export runs once), writes its result where the driver summarizes it, and the summary is written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUICK, cnn_recipe

pytestmark = pytest.mark.torch
SWEEP = ["-m", "+recipe=cnn", *QUICK, "target=onnxruntime_fp32,openvino_fp32"]  # OpenVINO compiles in a spawned process


def _summary(workspace) -> list[dict]:
    sweep = next((workspace.root / "mdbuild-outputs" / "sweeps").glob("*/*"))
    return json.loads((sweep / "summary.json").read_text())


def _ran(stdout: str, step: str) -> int:
    return sum(1 for line in stdout.splitlines() if f"] {step:<13} running " in line)


def test_a_sweep_on_joblib_processes(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run(*SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    rows = _summary(workspace)
    assert [row["passed"] for row in rows] == [True, True] and len({row["artifact"] for row in rows}) == 2
    assert _ran(result.stdout, "export") == 1  # the other job waited for it, or found it cached


@pytest.fixture
def ray_cluster(tmp_path):
    """A Ray head node on this machine (Ray replaces 127.0.0.1 with the host's address itself), stopped after."""
    ray = str(Path(sys.executable).with_name("ray"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A home of its own: Ray's token authentication reads ~/.ray/auth_token, which a machine may hold.
    (tmp_path / "home").mkdir()
    settings = {"RAY_USAGE_STATS_ENABLED": "0", "HOME": str(tmp_path / "home")}
    env = {**os.environ, **settings}
    subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True, timeout=120)
    try:
        yield {"RAY_ADDRESS": f"127.0.0.1:{port}", **settings}
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_a_sweep_on_a_ray_cluster(workspace, ray_cluster):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run(*SWEEP, "hydra/launcher=ray_cluster", env=ray_cluster)
    assert "(_run_job pid=" in result.stdout  # the jobs ran as Ray tasks, in Ray's worker processes
    rows = _summary(workspace)
    assert [row["passed"] for row in rows] == [True, True] and len({row["artifact"] for row in rows}) == 2
    assert _ran(result.stdout, "export") == 1
    assert all(Path(row["artifact"]).parent == workspace.root / "artifacts" for row in rows)
    assert len(workspace.cache_entries()) == 8  # export and reference shared; compile, verify, package each
