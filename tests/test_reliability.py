"""Concurrency, corruption and killed processes (issue 14): nothing lost, nothing wrong trusted."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import suppress
from pathlib import Path

import pytest

from conftest import MDBUILD, QUICK, TESTS, cnn_recipe, read_json

from builder import lock
from builder.locking import lease


def _add_entries(path: str, first: int, count: int, start) -> None:
    start.wait()
    for target in range(first, first + count):
        lock.update(Path(path), "r", f"t{target:03d}", {"steps": []})


def test_concurrent_lock_updates_lose_no_entry(tmp_path):
    """Eight processes adding entries to one lock file at once: every entry is there (the read-change-
    replace without an inter-process lock lost entries in 4 of 6 trials of three builds)."""
    path = tmp_path / "recipes" / "r.lock.json"
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Event()
    writers = [spawn.Process(target=_add_entries, args=(str(path), 10 * n, 10, start)) for n in range(8)]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    assert sorted(read_json(path)["targets"]) == [f"t{n:03d}" for n in range(80)]
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.lock.json"]  # nothing left beside it


def _check_writable(path: str, start, failures) -> None:
    from builder.errors import MdbuildError
    from builder.spec import writable_directory

    start.wait()
    for _ in range(20):
        try:
            writable_directory(Path(path), "output.dir")
        except MdbuildError as exc:
            failures.put(str(exc))


def test_concurrent_builds_checking_one_missing_output_directory_do_not_fail_each_other(tmp_path):
    """Each build makes the directory to try it and removes it again; another build making it meanwhile is
    not an error (one of four identical builds failed 'cannot write in .../artifacts (File exists)')."""
    spawn = multiprocessing.get_context("spawn")
    start, failures = spawn.Event(), spawn.Queue()
    checkers = [spawn.Process(target=_check_writable, args=(str(tmp_path / "a" / "b"), start, failures)) for _ in range(6)]
    for checker in checkers:
        checker.start()
    start.set()
    for checker in checkers:
        checker.join(60)
    assert failures.empty() and all(checker.exitcode == 0 for checker in checkers)


def _hold(path: str, held) -> None:
    with lease(Path(path), lambda who: None):
        held.set()
        time.sleep(60)


def test_a_lease_waits_for_its_holder_and_is_free_once_the_holder_is_killed(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    held = spawn.Event()
    holder = spawn.Process(target=_hold, args=(str(tmp_path / "key"), held))
    holder.start()
    assert held.wait(30)
    waited = []
    killer = multiprocessing.get_context("fork").Process(target=lambda: (time.sleep(0.5), os.kill(holder.pid, signal.SIGKILL)))
    killer.start()
    with lease(tmp_path / "key", waited.append):
        pass
    killer.join()
    holder.join()
    assert len(waited) == 1 and f"pid {holder.pid} on " in waited[0]


def _hold_briefly(path: str, held) -> None:
    with lease(Path(path), lambda who: None):
        held.set()
        time.sleep(1)


def test_a_lease_its_holder_removed_is_taken_anew_at_its_path(tmp_path):
    """A holder that ends without a failure removes its lease file; the process that waited on that file
    locks the file now at the path instead (else a third process could hold the path's lease alongside)."""
    path = tmp_path / "leases" / "key"
    spawn = multiprocessing.get_context("spawn")
    held = spawn.Event()
    holder = spawn.Process(target=_hold_briefly, args=(str(path), held))
    holder.start()
    assert held.wait(30)
    waited = []
    with lease(path, waited.append) as mine:
        assert os.fstat(mine.fd).st_ino == os.stat(path).st_ino
        assert read_json(path)["pid"] == os.getpid()
    holder.join()
    assert waited and not path.exists()
    # A holder that failed removes its file too; the process that waited on it gets its record.
    failing = spawn.Process(target=_fail_briefly, args=(str(path), held := spawn.Event()))
    failing.start()
    assert held.wait(30)
    with lease(path, waited.append) as mine:
        assert mine.previous["failed"] == "ValueError: no weights"
    failing.join()
    assert not path.exists()


def _fail_briefly(path: str, held) -> None:
    with suppress(ValueError), lease(Path(path), lambda who: None) as mine:
        mine.note(failed="ValueError: no weights")
        held.set()
        time.sleep(1)
        raise ValueError("no weights")


def _env(workspace) -> dict:
    """The environment Workspace.run gives a build: this checkout's mdbuild, the workspace's modules."""
    return {**os.environ, "MDBUILD_CACHE_DIR": str(workspace.cache),
            "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(workspace.root)])}


def _flip_keeping_stat(path: Path) -> None:
    """Changes a byte in the middle of the file, keeping its size and mtime."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _entry_of(workspace, step: str) -> Path:
    return next(entry for entry in workspace.cache_entries()
                if json.loads((entry / "meta.json").read_text())["description"]["step"] == step)


@pytest.mark.torch
def test_a_damaged_entry_is_found_by_content_where_it_is_read_and_rebuilt(workspace):
    """A same-size change with the mtime kept passes the stat check of a hit; the step that reads the
    entry re-hashes it, discards it, and the build starts over and rebuilds it (it used to verify the
    damaged model and fail with a misleading fix, keeping the bad entry)."""
    workspace.recipe("cnn", cnn_recipe())
    workspace.run("+recipe=cnn", *QUICK)
    _flip_keeping_stat(_entry_of(workspace, "export") / "out" / "model.onnx")
    result = workspace.run("+recipe=cnn", *QUICK, "target=openvino_fp32")
    assert "warning: the cache entry of step 'export' (" in result.stdout
    assert "is damaged: model.onnx does not match its sha256; discarded, starting over to rebuild it" in result.stdout
    assert result.ran()[0] == "export" and "(its cache entry was damaged: model.onnx does not match" in result.stdout
    assert read_json(result.artifact / "report.json")["passed"]


@pytest.mark.torch
def test_a_damaged_package_entry_is_rebuilt_before_the_artifact_is_copied_from_it(workspace):
    workspace.recipe("cnn", cnn_recipe())
    first = workspace.run("+recipe=cnn", *QUICK)
    _flip_keeping_stat(_entry_of(workspace, "package") / "out" / "model_repository" / "cnn" / "1" / "model.onnx")
    shutil.rmtree(first.artifact)
    again = workspace.run("+recipe=cnn", *QUICK)
    assert "warning: the cache entry of step 'package' (" in again.stdout and again.ran() == ["package"]
    assert again.artifact == first.artifact
    workspace.run("+recipe=cnn", *QUICK, "mode=check")  # what is locked is what was rebuilt


@pytest.mark.torch
def test_a_damaged_artifact_directory_is_replaced_and_the_lock_follows_the_artifact(workspace):
    workspace.recipe("cnn", cnn_recipe())
    first = workspace.run("+recipe=cnn", *QUICK)
    model = first.artifact / "model_repository" / "cnn" / "1" / "model.onnx"
    original = model.read_bytes()
    _flip_keeping_stat(model)
    again = workspace.run("+recipe=cnn", *QUICK)
    assert again.ran() == [] and again.artifact == first.artifact and model.read_bytes() == original
    assert "warning: the artifact directory was damaged (model_repository/cnn/1/model.onnx does not match its " \
           "sha256); replaced with the build's own copy" in again.stdout
    # Leftovers of builds killed while placing the artifact are removed; nothing is left beside it.
    for name in (f".{first.artifact.name}.{socket.gethostname().replace('-', '_')}-999999-0a1b2c3d",):
        (first.artifact.parent / name).mkdir()
    (first.artifact / "report.md").unlink()
    workspace.run("+recipe=cnn", *QUICK)
    assert sorted(p.name for p in first.artifact.parent.iterdir()) == [first.artifact.name, "cnn-onnxruntime_fp32-latest"]
    # The lock is written after the artifact: a build that cannot write its artifact leaves the lock alone.
    lock = workspace.root / "recipes" / "cnn.lock.json"
    before = lock.read_text()
    (workspace.root / "blocked").write_text("a file, not a directory")
    failed = workspace.run("+recipe=cnn", *QUICK, "target=openvino_fp32", "output.dir=blocked", check=False)
    assert failed.code == 1 and lock.read_text() == before


@pytest.mark.torch
def test_concurrent_identical_builds_run_each_step_once(workspace):
    """Four identical builds on an empty cache: each step runs in one of them, the others wait for it
    and take its entry (they ran export 4 times, 15 step runs instead of 5)."""
    workspace.recipe("cnn", cnn_recipe())
    builds = [subprocess.Popen([*MDBUILD, "+recipe=cnn", *QUICK], cwd=workspace.root, env=_env(workspace), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [build.communicate(timeout=600) for build in builds]
    assert [build.returncode for build in builds] == [0] * 4, outputs
    ran = [line.split()[1] for out, _ in outputs for line in out.splitlines() if " running " in line]
    assert sorted(ran) == sorted(["export", "reference", "compile", "verify", "package"])
    assert any(" waiting " in out and "is building it)" in out for out, _ in outputs)
    assert len({out.splitlines()[-1] for out, _ in outputs}) == 1  # one artifact
    assert not [p for p in (workspace.cache / "leases").rglob("*") if p.is_file()]  # leases do not pile up


@pytest.mark.torch
def test_builds_waiting_for_a_step_that_fails_fail_with_it_instead_of_repeating_it(workspace):
    (workspace.root / "slow.py").write_text(
        "import time\n"
        "def failing():\n"
        "    time.sleep(3)\n"
        "    raise ValueError('no weights here')\n")
    workspace.recipe("slow", cnn_recipe(factory="slow.failing", kwargs={}))
    builds = [subprocess.Popen([*MDBUILD, "+recipe=slow", *QUICK], cwd=workspace.root, env=_env(workspace),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [build.communicate(timeout=300) for build in builds]
    assert [build.returncode for build in builds] == [1] * 3
    assert sum(out.count(" running ") for out, _ in outputs) == 1, outputs
    assert sum("error: model.factory: the factory slow.failing raised ValueError: no weights here (fix: " in err
               for _, err in outputs) == 1
    repeated = "error: model.factory: the factory slow.failing raised ValueError: no weights here (the failure of the build " \
               "this one waited for, pid "
    assert sum(repeated in err and ", at step export: not repeated)" in err and err.count("(fix: ") == 1
               for _, err in outputs) == 2, outputs


@pytest.mark.torch
def test_sigterm_ends_a_build_without_leaving_its_work_directory(workspace):
    (workspace.root / "slow.py").write_text(  # an export that is surely running when the signal comes
        "import time\nimport tinynets\ndef cnn():\n    time.sleep(30)\n    return tinynets.small_cnn()\n")
    workspace.recipe("cnn", cnn_recipe(factory="slow.cnn", kwargs={}))
    proc = subprocess.Popen([*MDBUILD, "+recipe=cnn", *QUICK], cwd=workspace.root, env=_env(workspace),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.split()[1:3] == ["export", "running"]:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "error: terminated; nothing half-written was kept" in err
    assert workspace.cache_entries() == [] and not any((workspace.cache / "tmp").iterdir())
