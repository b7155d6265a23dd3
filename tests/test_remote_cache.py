"""The remote cache tier (issue 15) against a real S3-protocol server started here (moto's standalone
server on 127.0.0.1), with the ordinary S3 clients: two local caches stand for two machines."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MDBUILD, QUICK, TESTS, Workspace, cnn_recipe, read_json

pytestmark = pytest.mark.torch
BUCKET = "mdbuild-team"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free port of 127.0.0.1, with one bucket; stopped after the module."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    try:
        import s3fs

        deadline = time.monotonic() + 30
        while True:
            try:
                fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
                fs.mkdir(BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield endpoint, fs
    finally:
        server.terminate()
        server.wait(10)


def _remote(s3, prefix: str) -> list[str]:
    endpoint, _ = s3
    return [f"cache.remote=s3://{BUCKET}/{prefix}", f"+cache.remote_options.endpoint_url={endpoint}"]


def _machine(tmp_path, name: str) -> Workspace:
    """A working copy with its own local cache: another machine of the team."""
    workspace = Workspace(tmp_path / name / "work", tmp_path / name / "cache")
    workspace.recipe("cnn", cnn_recipe())
    return workspace


def _lines(result, word: str) -> list[str]:
    return [line.split()[1] for line in result.stdout.splitlines() if line.startswith("[") and f" {word} " in line]


def test_a_second_machine_takes_every_step_from_the_remote_and_builds_the_same_artifact(s3, tmp_path):
    first = _machine(tmp_path, "one").run("+recipe=cnn", *QUICK, *_remote(s3, "warm"))
    assert len(_lines(first, "running")) == 5 and "MB uploaded" in first.stdout
    _, fs = s3
    manifests = fs.glob(f"{BUCKET}/warm/entries/*/*/meta.json")
    assert len(manifests) == 5  # one per step, written after the files
    two = _machine(tmp_path, "two")
    second = two.run("+recipe=cnn", *QUICK, *_remote(s3, "warm"))
    assert _lines(second, "running") == [] and len(_lines(second, "remote")) == 5
    assert first.artifact.name == second.artifact.name
    # Only what the build read was downloaded: the package entry the artifact is copied from.
    assert [read_json(entry / "meta.json")["description"]["step"] for entry in two.cache_entries()] == ["package"]
    assert (first.artifact / "model_repository").is_dir() and (second.artifact / "manifest.json").read_text() == \
        (first.artifact / "manifest.json").read_text()


def test_a_damaged_or_half_uploaded_remote_entry_is_not_used(s3, tmp_path):
    _machine(tmp_path, "one").run("+recipe=cnn", *QUICK, *_remote(s3, "damaged"))
    _, fs = s3
    fs.invalidate_cache()
    by_step = {json.loads(fs.cat_file(path))["description"]["step"]: path.rsplit("/", 1)[0]
               for path in fs.glob(f"{BUCKET}/damaged/entries/*/*/meta.json")}
    model = next(path for path in fs.find(f"{by_step['package']}/out") if path.endswith("model.onnx"))
    data = bytearray(fs.cat_file(model))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(model, bytes(data))  # same size, other bytes: found when the artifact is copied from it
    fs.rm_file(f"{by_step['reference']}/meta.json")  # an upload cut before its manifest: not a hit
    second = _machine(tmp_path, "two").run("+recipe=cnn", *QUICK, *_remote(s3, "damaged"))
    assert "warning: remote cache: model_repository/cnn/1/model.onnx of " in second.stdout, second.stdout
    assert "does not match its sha256" in second.stdout
    assert _lines(second, "running") == ["reference", "package"]  # package rebuilt here from the remote's inputs
    fs.invalidate_cache()
    assert fs.cat_file(model) != bytes(data)  # the remote copy replaced by the intact one


def test_builds_on_two_machines_at_once_run_each_step_once(s3, tmp_path):
    """Two local caches (two hosts' worth: their local leases do not see each other) and one remote: the
    remote lease makes one build each step while the other waits, then fetches it."""
    machines = [_machine(tmp_path, name) for name in ("one", "two")]
    builds = [subprocess.Popen([*MDBUILD, "+recipe=cnn", *QUICK, *_remote(s3, "concurrent")], cwd=m.root,
                               env={**os.environ, "MDBUILD_CACHE_DIR": str(m.cache),
                                    "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(m.root)])},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for m in machines]
    outputs = [build.communicate(timeout=600) for build in builds]
    assert [build.returncode for build in builds] == [0, 0], outputs
    ran = sorted(line.split()[1] for out, _ in outputs for line in out.splitlines() if " running " in line)
    assert ran == sorted(["export", "reference", "compile", "verify", "package"]), outputs
    assert any(f"through s3://{BUCKET}/concurrent" in out for out, _ in outputs)
    _, fs = s3
    fs.invalidate_cache()
    assert not fs.glob(f"{BUCKET}/concurrent/leases/**")  # released


@pytest.mark.parametrize(("remote", "message"), [
    ("cache.remote=nosuch://bucket/x", "error: cache.remote: cannot open nosuch://bucket/x: "),
    ("cache.remote=s3://no-such-bucket-here/x", "error: cache.remote: cannot reach s3://no-such-bucket-here/x: "),
])
def test_a_remote_that_cannot_be_used_is_one_line_before_any_step(s3, tmp_path, remote, message):
    endpoint, _ = s3
    workspace = _machine(tmp_path, "one")
    result = workspace.run("+recipe=cnn", *QUICK, remote, f"+cache.remote_options.endpoint_url={endpoint}", check=False)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 1 and len(errors) == 1 and errors[0].startswith(message) and "(fix: " in errors[0], result.stderr
    assert " running " not in result.stdout and not workspace.cache_entries()
    shutil.rmtree(workspace.root / "mdbuild-outputs", ignore_errors=True)


def test_cache_push_and_pull_move_the_entries_a_lock_names(s3, tmp_path):
    """A machine that built without the remote pushes its cache; another pulls what the first one's lock
    names and then builds with every step cached, without the remote."""
    endpoint, _ = s3
    one = _machine(tmp_path, "one")
    one.run("+recipe=cnn", *QUICK)
    remote = ["--remote", f"s3://{BUCKET}/pushed", "--remote-option", f"endpoint_url={endpoint}"]
    pushed = one.run("cache", *remote, "push")
    assert "pushed 5 entries" in pushed.stdout and "MB uploaded" in pushed.stdout
    assert "pushed 0 entries" in one.run("cache", *remote, "push").stdout  # the remote has them all
    two = _machine(tmp_path, "two")
    pulled = two.run("cache", *remote, "pull", "--locks", str(one.root / "recipes" / "cnn.lock.json"))
    assert "pulled 5 of 5 entries" in pulled.stdout
    assert two.run("+recipe=cnn", *QUICK).ran() == []


def test_a_file_remote_shares_like_s3_and_damaged_entries_are_misses_not_failures(tmp_path):
    """file:// (a shared file system): folders made as needed. With every remote entry's files gone (the
    manifests left), the second machine warns and builds each step itself instead of failing."""
    store = tmp_path / "store"
    remote = [f"cache.remote=file://{store}"]
    _machine(tmp_path, "one").run("+recipe=cnn", *QUICK, *remote)
    assert _lines(_machine(tmp_path, "two").run("+recipe=cnn", *QUICK, *remote), "running") == []
    for out in store.glob("entries/*/*/out"):
        shutil.rmtree(out)
    third = _machine(tmp_path, "three").run("+recipe=cnn", *QUICK, *remote)
    assert "warning: remote cache: cannot download " in third.stdout
    assert sorted(_lines(third, "running")) == sorted(["export", "reference", "compile", "verify", "package"])


def test_a_manifest_cannot_write_outside_its_entry(tmp_path):
    from builder.remote import Remote

    store = tmp_path / "store"
    key = "ab" + "0" * 62
    escape = "../../../../../../../../../../" + str(tmp_path / "escaped.txt")
    entry = store / "entries" / "ab" / key
    (entry / "out").mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps({"files": {escape: {"sha256": "0" * 64}}, "description": {}}))
    remote = Remote(f"file://{store}", {})
    assert remote.fetch(key, tmp_path / "into") is None
    assert "outside its entry" in remote.warnings[0] and not (tmp_path / "escaped.txt").exists()


def test_a_remote_lease_left_by_a_dead_host_is_taken_over_and_only_its_holder_removes_it(tmp_path, monkeypatch):
    from builder import remote as remote_module

    monkeypatch.setattr(remote_module, "_EXPIRES_S", 0.5)
    monkeypatch.setattr(remote_module, "_POLL_S", 0.05)
    store = tmp_path / "store"
    key = "cd" + "1" * 62
    lease = store / "leases" / "cd" / key
    lease.parent.mkdir(parents=True)
    lease.write_text("")  # a holder killed between creating its lease and writing it
    remote = remote_module.Remote(f"file://{store}", {})
    waited = []
    with remote.lease(key, waited.append) as held:
        assert held and waited and json.loads(lease.read_text())["pid"] == os.getpid()
        lease.write_text(json.dumps({"token": "another holder's"}))  # this one stalled; another took it over
    assert json.loads(lease.read_text())["token"] == "another holder's"  # left to its holder


def test_cache_gc_on_the_remote_tier_keeps_what_lock_files_name(s3, tmp_path):
    """ls/du/gc --on-remote act on the shared tier: a download marks an entry used; an upload cut short (no
    manifest) is collected; entries the lock names stay unless --include-locked; what gc removed is a miss."""
    endpoint, fs = s3
    remote = ["--remote", f"s3://{BUCKET}/gc", "--remote-option", f"endpoint_url={endpoint}"]
    one = _machine(tmp_path, "one")
    one.run("+recipe=cnn", *QUICK, *_remote(s3, "gc"))
    fs.pipe(f"{BUCKET}/gc/entries/ab/ab{'0' * 62}/out/model.onnx", b"half an upload")
    listed = one.run("cache", *remote, "ls", "--on-remote").stdout.splitlines()[1:]
    assert len(listed) == 6 and sum(line.split()[1] == "(no" for line in listed) == 1
    assert sorted(line.split()[1] for line in listed if "yes" in line) == ["compile", "export", "package", "reference", "verify"]
    assert "6 entries" in one.run("cache", *remote, "du", "--on-remote").stdout

    two = _machine(tmp_path, "two")
    assert two.run("+recipe=cnn", *QUICK, *_remote(s3, "gc")).ran() == []
    package = read_json(one.root / "recipes" / "cnn.lock.json")["targets"]["onnxruntime_fp32"]["steps"][-1]["key"]
    assert fs.exists(f"{BUCKET}/gc/entries/{package[:2]}/{package}/used")  # its download marked it used

    gc = ["cache", *remote, "gc", "--on-remote", "--older-than", "0s", "--keep-recent", "0s"]
    assert "would remove 0 entries" in one.run(*gc, "--dry-run").stdout  # the lock names 5; the upload may be under way
    assert "removed 5 entries from s3://" in one.run(*gc, "--include-locked").stdout
    assert [path.rsplit("/", 3)[-3] for path in fs.find(f"{BUCKET}/gc/entries")] == [f"ab{'0' * 62}"]
    three = _machine(tmp_path, "three")
    assert three.run("+recipe=cnn", *QUICK, *_remote(s3, "gc")).ran() == ["export", "reference", "compile", "verify", "package"]


def test_remote_gc_collects_an_upload_cut_short_an_hour_later(tmp_path):
    """On a file:// remote whose file times can be set: files without a manifest, last written over an hour ago."""
    one = _machine(tmp_path, "one")
    remote = tmp_path / "remote"
    assert one.run("cache", "--remote", f"file://{remote}", "ls", "--on-remote").stdout.count("\n") == 1  # the header
    one.run("+recipe=cnn", *QUICK, f"cache.remote=file://{remote}")
    half = remote / "entries" / "ab" / f"ab{'0' * 62}" / "out" / "model.onnx"
    half.parent.mkdir(parents=True)
    half.write_bytes(b"half an upload")
    gc = ["cache", "--remote", f"file://{remote}", "gc", "--on-remote", "--older-than", "30d"]
    assert "removed 0 entries" in one.run(*gc).stdout
    os.utime(half, (time.time() - 7200, time.time() - 7200))
    assert "removed 1 entries" in one.run(*gc).stdout and not half.parent.parent.exists()
    assert len(list(remote.glob("entries/*/*/meta.json"))) == 5


def test_remote_gc_leaves_an_entry_a_build_took_up_since_the_listing(tmp_path):
    """An entry rewritten after gc listed it (a re-upload), or whose lease a build holds, is not removed."""
    from builder.remote import Remote

    root = tmp_path / "remote"
    for key in ("aa" + "1" * 62, "bb" + "2" * 62, "cc" + "3" * 62):
        (root / "entries" / key[:2] / key / "out").mkdir(parents=True)
        (root / "entries" / key[:2] / key / "out" / "model.onnx").write_bytes(b"weights")
    remote = Remote(f"file://{root}", {})
    listed = {entry["key"]: entry for entry in remote.stored()}
    rewritten = root / "entries" / "aa" / ("aa" + "1" * 62) / "out" / "model.onnx"
    os.utime(rewritten, (time.time() + 5, time.time() + 5))
    (root / "leases" / "bb").mkdir(parents=True)
    (root / "leases" / "bb" / ("bb" + "2" * 62)).write_text("{}")
    assert [remote.remove(key, entry["objects"]) for key, entry in sorted(listed.items())] == [False, False, True]
    assert sorted(path.name for path in (root / "entries").glob("*/*")) == ["aa" + "1" * 62, "bb" + "2" * 62]
