"""The step cache and the miss reasons, on real files."""

import json
import os

from builder.cache import Cache
from builder.reasons import explain


def _commit(cache: Cache, key: str, content: bytes):
    work = cache.new_workdir()
    (work / "out" / "sub").mkdir()
    (work / "out" / "sub" / "file.bin").write_bytes(content)
    return cache.commit(key, work, {"step": "x"}, 0.1)


def test_commit_then_lookup(tmp_path):
    cache = Cache(tmp_path)
    entry = _commit(cache, "a" * 64, b"hello")
    found = cache.lookup("a" * 64)
    assert found == entry and (found.out / "sub" / "file.bin").read_bytes() == b"hello"
    assert cache.lookup("b" * 64) is None
    assert not any((tmp_path / "tmp").iterdir())


def test_same_content_same_digest(tmp_path):
    cache = Cache(tmp_path)
    assert _commit(cache, "a" * 64, b"x").digest == _commit(cache, "b" * 64, b"x").digest
    assert _commit(cache, "c" * 64, b"y").digest != _commit(cache, "d" * 64, b"x").digest


def test_corrupt_or_truncated_entries_are_discarded(tmp_path):
    cache = Cache(tmp_path)
    entry = _commit(cache, "a" * 64, b"hello world")
    target = entry.out / "sub" / "file.bin"
    target.write_bytes(b"hello w0rld")
    assert cache.lookup("a" * 64) is None
    assert "does not match its sha256" in cache.warnings[0]
    assert not entry.out.exists()

    entry = _commit(cache, "b" * 64, b"data")
    meta = entry.out.parent / "meta.json"
    meta.write_text("{broken")
    assert cache.lookup("b" * 64) is None and "unreadable metadata" in cache.warnings[-1]


def test_touching_a_file_without_changing_it_keeps_the_entry(tmp_path):
    cache = Cache(tmp_path)
    entry = _commit(cache, "a" * 64, b"same")
    os.utime(entry.out / "sub" / "file.bin", ns=(1, 1))
    assert cache.lookup("a" * 64) is not None and cache.warnings == []


def test_workdirs_of_dead_builds_are_removed(tmp_path):
    cache = Cache(tmp_path)
    alive = cache.new_workdir()
    host = alive.name.split("-")[0]
    dead = tmp_path / "tmp" / f"{host}-999999999-deadbeef"
    elsewhere = tmp_path / "tmp" / "otherhost-999999999-deadbeef"  # a machine sharing the cache directory
    for work in (dead, elsewhere):
        (work / "out").mkdir(parents=True)
    cache.clean_stale_workdirs()
    assert not dead.exists() and alive.exists() and elsewhere.exists()


def test_disabled_cache_stores_nothing(tmp_path):
    cache = Cache(tmp_path, enabled=False)
    _commit(cache, "a" * 64, b"x")
    assert cache.lookup("a" * 64) is None
    assert not (tmp_path / "entries").exists()


def test_explain_names_what_changed():
    before = {"version": 1, "config": {"target": {"precision": "fp32"}}, "inputs": {"model": "1"},
              "libraries": {"onnxruntime": "1.31.0"}}
    after = json.loads(json.dumps(before))
    assert explain(None, after) == "never built here"
    assert explain(before, after).startswith("not in cache")
    after["config"]["target"]["precision"] = "fp16"
    after["inputs"]["model"] = "2"
    after["libraries"]["onnxruntime"] = "1.32.0"
    after["version"] = 2
    assert explain(before, after) == ("step version changed: 1->2; config changed: target.precision; "
                                      "input changed: model; library changed: onnxruntime 1.31.0->1.32.0")

