"""Hydra multirun: every job builds, sharing the cache (the export runs once)."""

from pathlib import Path

import pytest

from conftest import QUICK, cnn_recipe, read_json

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
    latest = workspace.root / "artifacts" / "cnn-onnxruntime_fp32-latest"
    assert latest.is_symlink() and latest.resolve() == Path(artifacts[1]).resolve()  # the job built last
    assert steps(result, "export") == ["running", "cached"]
    assert steps(result, "compile") == ["running", "running"]
    sweeps = list((workspace.root / "mdbuild-outputs" / "sweeps").glob("*/*/multirun.yaml"))
    assert len(sweeps) == 1
    rows = read_json(sweeps[0].parent / "summary.json")  # rows of one target are told apart by what varied
    assert [row["job"] for row in rows] == ["onnxruntime_fp32 (hardware.intra_op_threads=1)",
                                            "onnxruntime_fp32 (hardware.intra_op_threads=2)"]
    assert "| onnxruntime_fp32 (hardware.intra_op_threads=2) |" in (sweeps[0].parent / "summary.md").read_text()
    assert "note: the lock keeps one entry per target: onnxruntime_fp32's is its job that finished last" in result.stdout


def test_a_failing_job_fails_the_sweep_after_the_others_ran_and_the_summary_is_written(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("-m", "+recipe=cnn", *QUICK, "verify.tolerances.fp32.min_cosine=1.5,0.5", check=False)
    assert result.code == 1
    assert result.stdout.count("artifact: ") == 1  # the job after the failed one ran
    assert "error: job 0 (+recipe=cnn verify=quick verify.tolerances.fp32.min_cosine=1.5): " \
           "verify.tolerances.fp32.min_cosine: 1.5 is not a limit" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: sweep: 1 of 2 jobs failed (onnxruntime_fp32 (verify.tolerances.fp32.min_cosine=1.5))")
    sweep = next((workspace.root / "mdbuild-outputs" / "sweeps").glob("*/*"))
    rows = read_json(sweep / "summary.json")
    assert [row["passed"] for row in rows] == [False, True] and "1.5 is not a limit" in rows[0]["error"]
    markdown = (sweep / "summary.md").read_text()
    assert "| FAILED |" in markdown and "Failed jobs:" in markdown and "1.5 is not a limit" in markdown
    assert "1.5 is not a limit" in (sweep / "summary.html").read_text()


def test_a_sweep_directory_given_again_summarizes_this_sweep_only(workspace):
    workspace.recipe("cnn", cnn_recipe())
    failed = workspace.run("-m", "+recipe=cnn", *QUICK, "hydra.sweep.dir=sweep", "serving.top_k=2,-3", check=False)
    assert failed.code == 1
    again = workspace.run("-m", "+recipe=cnn", *QUICK, "hydra.sweep.dir=sweep", "serving.top_k=2")
    assert [row["passed"] for row in read_json(workspace.root / "sweep" / "summary.json")] == [True]
    assert "jobs failed" not in again.stderr
