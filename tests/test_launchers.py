"""Sweeps through Hydra's own launcher plugins (issue 15): joblib's processes on this machine, and a
real local Ray cluster (`ray start --head`, stopped by the test). Every job shares the cache (the
export runs once), writes its result where the driver summarizes it, and the summary is written."""

from __future__ import annotations

import json
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
    """A Ray head node on this machine declaring one GPU, ended after (benchmarks/_common.py: ray_head)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from _common import ray_head

    (tmp_path / "home").mkdir()  # a home of its own: Ray's token authentication reads ~/.ray/auth_token
    settings = {"RAY_USAGE_STATS_ENABLED": "0", "HOME": str(tmp_path / "home")}
    with ray_head(settings, cpus=2, gpus=1) as address:
        yield {"RAY_ADDRESS": address, **settings}


def test_a_sweep_on_a_ray_cluster(workspace, ray_cluster):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run(*SWEEP, "hydra/launcher=ray_cluster", env=ray_cluster)
    assert "(_run_job pid=" in result.stdout  # the jobs ran as Ray tasks, in Ray's worker processes
    rows = _summary(workspace)
    assert [row["passed"] for row in rows] == [True, True] and len({row["artifact"] for row in rows}) == 2
    assert _ran(result.stdout, "export") == 1
    assert all(Path(row["artifact"]).parent == workspace.root / "artifacts" for row in rows)
    assert len(workspace.cache_entries()) == 8  # export and reference shared; compile, verify, package each


def test_a_job_asks_the_cluster_for_what_its_target_needs(workspace, ray_cluster):
    """A full-TensorRT job asks Ray for a GPU and gets the cluster's one (without the SDK here it defers the
    engine build); a job asking for more than the cluster has fails the sweep before any job starts."""
    workspace.recipe("cnn", cnn_recipe())
    sweep = ["-m", "+recipe=cnn", *QUICK, "hydra/launcher=ray_cluster"]
    workspace.run(*sweep, "target=tensorrt_fp32", "target.options.flavor=tensorrt,auto", env=ray_cluster)
    full, auto = _summary(workspace)
    assert full["worker"]["resources"].get("GPU") == 1 and full["passed"]
    assert "GPU" not in auto["worker"]["resources"] and auto["passed"]  # an RTX engine or a deferred build: no GPU

    refused = workspace.run(*sweep, "target=onnxruntime_fp32", "+hydra.launcher.resources.onnxruntime_fp32.num_gpus=2",
                            env=ray_cluster, check=False)
    assert refused.code == 1 and refused.stderr.strip().splitlines()[-1] == (
        "error: hydra.launcher.resources.onnxruntime_fp32: job 0 (target onnxruntime_fp32) asks Ray for 2 GPU on one "
        "node; the cluster's best node has 1 GPU (fix: ask for what one node has, or add a node that has it (a "
        "full-TensorRT build needs a GPU: target.options.flavor=auto builds without one))")
    assert "running" not in refused.stdout


def test_runtime_env_variables_left_empty_are_not_sent():
    """An unset MDBUILD_CACHE_DIR on the driver must not override a node's own setting with ''."""
    from hydra_plugins.mdbuild_launchers.ray_cluster import asked, placeable, without_empty_env

    from builder.errors import MdbuildError

    init = {"address": "auto", "runtime_env": {"env_vars": {"MDBUILD_CACHE_DIR": "", "MDBUILD_CACHE_REMOTE": "s3://b/p"}}}
    assert without_empty_env(init)["runtime_env"]["env_vars"] == {"MDBUILD_CACHE_REMOTE": "s3://b/p"}
    assert asked({"num_gpus": 1, "num_cpus": 2, "max_retries": 3, "resources": {"fast_disk": 1}}, "k") == \
        {"GPU": 1.0, "CPU": 2.0, "fast_disk": 1.0}
    with pytest.raises(MdbuildError, match="'8G' is not an amount of memory"):
        asked({"memory": "8G"}, "hydra.launcher.resources.x")
    two_nodes = [{"Alive": True, "Resources": {"CPU": 1.0}}, {"Alive": True, "Resources": {"CPU": 1.0}}]
    assert not placeable({"CPU": 2.0}, two_nodes)  # the cluster has 2 CPUs, no node has
    assert placeable({"CPU": 1.0}, two_nodes) and not placeable({"CPU": 1.0}, [{"Alive": False, "Resources": {"CPU": 4}}])
