"""target=auto: the usable candidates are built as a sweep, the fastest that passed its gate is shipped, and
the choice with its table is in the lock, the chosen artifact's report and <recipe>-auto-latest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.tensorrt.host import gpus
from builder.auto import choose
from builder.race import race
from conftest import QUICK, cnn_recipe, read_json

pytestmark = pytest.mark.torch

# The int8 gate is set out of reach: a candidate that fails is shown, never chosen.
CANDIDATES = ["select.targets=[onnxruntime_fp32,openvino_fp32,onnxruntime_int8,mindspore,tensorrt_fp32]",
              "calibration.source=random", "calibration.samples=8", "verify.tolerances.int8.min_cosine=0.9999999"]


def test_auto_ships_the_fastest_candidate_that_passed_and_records_the_choice(workspace):
    workspace.recipe("cnn", cnn_recipe())
    built = workspace.run("+recipe=cnn", *QUICK, "target=auto", *CANDIDATES)
    lock_path = workspace.root / "recipes" / "cnn.lock.json"
    record = read_json(lock_path)["targets"]["auto"]
    table = {row["target"]: row for row in record["table"]}
    assert sorted(table) == ["onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32"]
    assert not table["onnxruntime_int8"]["passed"] and "min_cosine" in table["onnxruntime_int8"]["error"]
    fastest = min((row for row in table.values() if row["passed"]), key=lambda row: row["race_p50_ms"])
    assert record["chosen"] == fastest["target"] and "the fastest p50" in record["why"]
    assert all(row["race_p50_ms"] > 0 for row in table.values() if row["passed"])  # raced side by side
    assert "mindspore" in record["skipped"]
    assert ("tensorrt_fp32" in record["skipped"]) == (not gpus())
    assert f"target=auto: chose {fastest['target']}" in built.stdout
    assert built.artifact.name == record["artifact"] and built.artifact.name.startswith(f"cnn-{fastest['target']}-")
    latest = workspace.root / "artifacts" / "cnn-auto-latest"
    assert latest.resolve() == built.artifact.resolve()
    report = read_json(built.artifact / "report.json")
    assert report["selection"]["chosen"] == fastest["target"] and len(report["selection"]["table"]) == 3
    assert "## Chosen by target=auto" in (built.artifact / "report.md").read_text()

    checked = workspace.run("+recipe=cnn", *QUICK, "target=auto", *CANDIDATES, "mode=check")
    assert f"the lock chose {fastest['target']}" in checked.stdout and "lock check passed" in checked.stdout

    # The lock's earlier choice is kept while it passes within select.margin of the fastest.
    other = next(name for name, row in table.items() if row["passed"] and name != fastest["target"])
    lock = read_json(lock_path)
    lock["targets"]["auto"]["chosen"] = other
    lock_path.write_text(json.dumps(lock))
    kept = workspace.run("+recipe=cnn", *QUICK, "target=auto", *CANDIDATES, "select.margin=1000")
    assert f"target=auto: chose {other}: the lock's choice, kept" in kept.stdout
    assert set(kept.ran()) == {"verify"}  # only the failed int8 verification runs again: a failure is not cached
    assert "error" not in kept.stderr and "note: candidate onnxruntime_int8 failed: " in kept.stderr
    assert read_json(lock_path)["targets"]["auto"]["chosen"] == other
    summary_md = next(line for line in kept.stdout.splitlines() if line.startswith("sweep summary: ")).split()[2]
    summary = read_json(Path(summary_md).with_name("summary.json"))
    assert [row["target"] for row in summary if row["recommended"]] == [other]  # the summary ships what auto chose
    assert "## Chosen by target=auto" not in (built.artifact / "report.md").read_text()  # no longer the choice
    assert "selection" not in read_json(built.artifact / "report.json")
    again = workspace.run("+recipe=cnn", *QUICK, "target=auto", *CANDIDATES, "select.margin=0")
    assert read_json(lock_path)["targets"]["auto"]["chosen"] == fastest["target"]
    assert latest.resolve() == again.artifact.resolve()

    # The check refuses a choice that is no longer a candidate, or whose target's entry another build replaced.
    refused = workspace.run("+recipe=cnn", *QUICK, "target=auto", "select.targets=[openvino_fp32,onnxruntime_int8]"
                            if fastest["target"] != "openvino_fp32" else "select.targets=[onnxruntime_fp32]", "mode=check",
                            check=False)
    assert refused.code == 1 and f"error: select.targets: the lock's choice, {fastest['target']}, is not among" in refused.stderr
    workspace.run("+recipe=cnn", *QUICK, f"target={fastest['target']}", "hardware.intra_op_threads=1")
    replaced = workspace.run("+recipe=cnn", *QUICK, "target=auto", *CANDIDATES, "mode=check", check=False)
    assert replaced.code == 1 and f"the lock's entry for {fastest['target']} is not the build target=auto chose" in replaced.stderr


def test_a_contestant_that_does_not_run_is_out_of_the_race(workspace, tmp_path):
    workspace.recipe("cnn", cnn_recipe())
    built = workspace.run("+recipe=cnn", *QUICK, "target=onnxruntime_fp32")
    measured = race({"good": built.artifact, "gone": tmp_path / "nothing"})
    assert measured["good"]["p50_ms"] > 0 and measured["good"]["runs"] >= 15
    assert measured["gone"]["error"].startswith("its model did not run here (FileNotFoundError: ")


def test_auto_sweeps_into_its_own_directory_from_the_working_directory(workspace):
    """A user's hydra.sweep.dir and hydra.job.chdir are this run's, not the candidates' sweep's."""
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", *QUICK, "target=auto", "select.targets=[onnxruntime_fp32]",
                           "hydra.sweep.dir=mysweep", "hydra.job.chdir=true")
    assert "target=auto: chose onnxruntime_fp32" in result.stdout and not (workspace.root / "mysweep").exists()


def test_sigterm_to_target_auto_alone_ends_its_candidates_cleanly(workspace):
    workspace.recipe("cnn", cnn_recipe())
    env = {**os.environ, "MDBUILD_CACHE_DIR": str(workspace.cache), "PYTHONPATH": str(Path(__file__).parents[1])}
    parent = subprocess.Popen([sys.executable, "-m", "builder", "+recipe=cnn", *QUICK, "target=auto",
                               "select.targets=[onnxruntime_fp32,openvino_fp32]"], cwd=workspace.root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in parent.stdout:
        if " running " in line:  # a step of a candidate runs in the child
            break
    parent.send_signal(signal.SIGTERM)
    out, err = parent.communicate(timeout=120)
    assert parent.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "terminated; nothing half-written was kept" in err
    assert not list((workspace.cache / "tmp").glob("*"))  # the child's work directories went with it


def test_auto_check_without_a_lock_says_so(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", *QUICK, "target=auto", "mode=check", check=False)
    assert result.code == 1 and result.stderr.strip() == (
        f"error: lock.path: no lock file at {workspace.root / 'recipes' / 'cnn.lock.json'} "
        "(fix: build target=auto once to write it, or point lock.path at it)")


def test_auto_fails_when_no_candidate_passes(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", *QUICK, "target=auto", "select.targets=[onnxruntime_fp32]",
                           "verify.tolerances.fp32.min_cosine=1.0", "verify.tolerances.fp32.max_rel_l2=0", check=False)
    assert result.code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: target: no candidate passed its gate with a measured latency (onnxruntime_fp32: ")
    assert not (workspace.root / "recipes" / "cnn.lock.json").exists()  # the failed candidate wrote no entry either
    assert not (workspace.root / "artifacts" / "cnn-auto-latest").exists()


def test_a_candidate_the_recipe_cannot_build_is_skipped_before_the_sweep(workspace):
    """onnxruntime_int8 needs calibration data this recipe does not declare: skipped at plan time, with why."""
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", *QUICK, "target=auto", "select.targets=[onnxruntime_fp32,onnxruntime_int8]",
                           "mode=plan")
    assert "target=auto: skipping onnxruntime_int8: calibration.source: ort_quantize needs calibration data" in result.stdout
    assert result.stdout.count("plan · recipe cnn · target ") == 1 and "target onnxruntime_fp32" in result.stdout


def _row(target, p50, passed=True):
    return {"target": target, "passed": passed, "p50_ms": p50}


def test_choose_keeps_the_locked_choice_only_within_the_margin_and_while_it_passes():
    rows = [_row("a", 1.0), _row("b", 1.04), _row("c", 0.5, passed=False)]
    assert choose(rows, "b", 0.05)[0]["target"] == "b"
    assert choose(rows, "b", 0.03)[0]["target"] == "a"
    assert choose([_row("a", 1.0), _row("b", 1.01, passed=False)], "b", 0.05)[0]["target"] == "a"
    assert choose([_row("a", None)], None, 0.05)[0] is None


def _contestant(code: str, log):
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                            text=True, bufsize=1)


def test_a_contestant_that_stops_answering_or_dies_is_out_not_a_hang(tmp_path):
    from builder.race import _answer

    with open(tmp_path / "log", "w+") as log:
        silent = _contestant("import time; time.sleep(60)", log)
        started = time.monotonic()
        assert _answer(silent, log, 0.5) == {"error": "its model did not answer within 0 s"}
        assert time.monotonic() - started < 10 and silent.poll() is not None  # killed, not waited for
        dead = _contestant("import sys; sys.exit('no SDK here')", log)
        dead.wait()
        assert _answer(dead, log, 5)["error"] == "its model did not run here (exit 1: no SDK here)"
