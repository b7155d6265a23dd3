"""Hydra multirun: every job builds, sharing the cache (the export runs once)."""

import pytest

from conftest import QUICK, cnn_recipe

pytestmark = pytest.mark.torch


def steps(result, step: str) -> list[str]:
    """How each job of the sweep handled one step: running or cached."""
    return [line.split()[2] for line in result.stdout.splitlines()
            if line.startswith("[") and line.split()[1] == step and line.split()[2] in ("running", "cached")]


def test_sweep_runs_every_job_and_shares_the_export(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("-m", "+recipe=cnn", *QUICK, "target=onnxruntime_fp32",
                           "hardware.intra_op_threads=1,2")
    artifacts = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("artifact: ")]
    assert len(set(artifacts)) == 2
    assert steps(result, "export") == ["running", "cached"]
    assert steps(result, "compile") == ["running", "running"]
    sweeps = list((workspace.root / "mdbuild-outputs" / "sweeps").glob("*/*/multirun.yaml"))
    assert len(sweeps) == 1


def test_a_failing_job_fails_the_sweep(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("-m", "+recipe=cnn", *QUICK, "verify.tolerances.fp32.min_cosine=0.5,1.5", check=False)
    assert result.code == 1
    assert result.stdout.count("artifact: ") == 1
    assert "min_cosine" in result.stderr
