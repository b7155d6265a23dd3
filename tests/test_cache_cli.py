"""`mdbuild cache ls | du | gc | verify` on a real cache (issue 15); push and pull are in
test_remote_cache.py, against an S3 server."""

from __future__ import annotations

import json
import os

import pytest

from conftest import QUICK, cnn_recipe

pytestmark = pytest.mark.torch


def _steps(workspace) -> dict[str, list]:
    found: dict[str, list] = {}
    for entry in workspace.cache_entries():
        found.setdefault(json.loads((entry / "meta.json").read_text())["description"]["step"], []).append(entry)
    return found


@pytest.fixture
def two_builds(workspace):
    """Two models of one recipe and target: the lock names the second; the first's entries are unlocked."""
    workspace.recipe("cnn", cnn_recipe())
    workspace.run("+recipe=cnn", *QUICK, "model.seed=1")
    workspace.run("+recipe=cnn", *QUICK, "model.seed=2")
    return workspace


def test_ls_and_du_show_every_entry_its_step_and_whether_a_lock_names_it(two_builds):
    listing = two_builds.run("cache", "ls").stdout.splitlines()
    assert listing[0].split() == ["key", "step", "MB", "last", "used", "locked"]
    rows = [line.split() for line in listing[1:]]
    assert len(rows) == 10 and sum(row[-1] == "yes" for row in rows) == 5  # the lock names the second build
    usage = two_builds.run("cache", "du").stdout
    assert "export" in usage and any(line.split()[:3] == ["total", "10", "entries"] for line in usage.splitlines())


def test_gc_removes_the_least_recently_used_but_never_what_a_lock_names(two_builds):
    dry = two_builds.run("cache", "gc", "--max-size", "1", "--keep-recent", "0s", "--dry-run").stdout
    assert "would remove 5 entries" in dry and len(two_builds.cache_entries()) == 10
    done = two_builds.run("cache", "gc", "--max-size", "1", "--keep-recent", "0s").stdout
    assert "removed 5 entries" in done and "5 named by lock files" in done
    assert two_builds.run("+recipe=cnn", *QUICK, "model.seed=2").ran() == []  # the locked build is intact
    assert "export" in two_builds.run("+recipe=cnn", *QUICK, "model.seed=1").ran()


def test_gc_leaves_entries_used_in_the_last_minutes_by_default(two_builds):
    """A running build may be reading them (a long build's early inputs are the least recently used)."""
    done = two_builds.run("cache", "gc", "--max-size", "1").stdout
    assert "removed 0 entries" in done and "5 used in the last 10m" in done and len(two_builds.cache_entries()) == 10


def test_gc_older_than_goes_by_last_use(two_builds):
    old = _steps(two_builds)["export"]
    for entry in old:  # both exports last used 40 days ago
        os.utime(entry / "meta.json", (0, os.stat(entry / "meta.json").st_mtime - 40 * 86400))
    done = two_builds.run("cache", "gc", "--older-than", "30d").stdout
    assert "removed 1 entries" in done  # the other export is named by the lock
    assert len(_steps(two_builds)["export"]) == 1
    everything = two_builds.run("cache", "gc", "--older-than", "30d", "--include-locked").stdout
    assert "removed 1 entries" in everything and "export" not in _steps(two_builds)


def test_verify_finds_a_damaged_entry_by_content_and_removes_it(two_builds):
    model = _steps(two_builds)["export"][0] / "out" / "model.onnx"
    stat = model.stat()
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # size and mtime as they were
    found = two_builds.run("cache", "verify", check=False)
    assert found.code == 1 and "damaged: " in found.stdout and "model.onnx does not match its sha256; removed" in found.stdout
    assert "10 entries checked, 1 damaged" in found.stdout
    again = two_builds.run("cache", "verify")
    assert "9 entries checked, 0 damaged" in again.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["cache"], "error: mdbuild cache: the following arguments are required: COMMAND"),
    (["cache", "gc"], "error: gc: nothing to collect by (fix: give --older-than AGE, --max-size SIZE, or both)"),
    (["cache", "gc", "--older-than", "3x"], "error: mdbuild cache gc: argument --older-than: '3x' is not an age"),
    (["cache", "push"], "error: --remote: no remote tier"),
])
def test_a_bad_cache_command_is_one_line(workspace, args, message):
    result = workspace.run(*args, check=False)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 1 and len(errors) == 1 and errors[0].startswith(message), result.stderr
