"""End-to-end builds through the real `mdbuild` command: artifact contents, caching, reasons."""

import hashlib

import pytest

from conftest import QUICK, cnn_recipe, read_json

pytestmark = pytest.mark.torch


def test_build_writes_a_complete_artifact(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", *QUICK)
    artifact = result.artifact
    assert artifact.parent == workspace.root / "artifacts"
    assert artifact.name.startswith("cnn-onnxruntime_fp32-")
    for name in ("model_repository/cnn/1/model.onnx", "model_repository/cnn/config.pbtxt", "manifest.json",
                 "requirements.txt", "serve.py", "serving/server.py", "serving/runtime.py", "README.md",
                 "report.json", "report.md", "samples.npz"):
        assert (artifact / name).is_file(), name

    manifest = read_json(artifact / "manifest.json")
    assert manifest["schema"] == 2 and manifest["recipe"] == "cnn" and manifest["target"] == "onnxruntime_fp32"
    assert manifest["config"]["model"]["factory"] == "tinynets.small_cnn"
    assert set(manifest["steps"]) == {"export", "reference", "compile", "verify", "package"}
    assert manifest["steps"]["package"]["key"] == manifest["build_key"]
    assert all(len(step["key"]) == 64 for step in manifest["steps"].values())
    assert all(len(step["digest"]) == 64 for name, step in manifest["steps"].items() if name != "package")
    assert manifest["libraries"]["onnxruntime"] and manifest["libraries"]["torch"]
    assert manifest["host"]["cpus"] >= 1 and manifest["runtime"]["backend"] == "onnxruntime"
    files = {p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == files - {"report.json", "report.md"}  # the reports: measured, not identity
    assert manifest["reports"] == ["report.json", "report.md"]
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((artifact / rel).read_bytes()).hexdigest() == digest, rel

    from importlib.metadata import version

    assert (artifact / "requirements.txt").read_text().split() == [
        f"numpy=={version('numpy')}", f"onnxruntime=={version('onnxruntime')}"]
    report = read_json(artifact / "report.json")
    assert report["passed"] is True
    logits = report["outputs"]["logits"]["metrics"]
    assert logits["rel_l2"] < 1e-4 and logits["min_cosine"] > 0.99999 and "top1_agreement" in logits
    assert 0 < report["latency"]["p50_ms"] <= report["latency"]["p99_ms"]
    assert report["latency"]["throughput_per_s"] > 0 and report["latency"]["items_per_run"] == 2
    assert "PASSED" in (artifact / "report.md").read_text()


def test_unchanged_rebuild_runs_nothing_and_target_change_reuses_export(workspace):
    workspace.recipe("cnn", cnn_recipe())
    first = workspace.run("+recipe=cnn", *QUICK)
    assert first.ran() == ["export", "reference", "compile", "verify", "package"]

    again = workspace.run("+recipe=cnn", *QUICK)
    assert again.ran() == []
    assert again.artifact == first.artifact

    other = workspace.run("+recipe=cnn", *QUICK, "target.options.graph_optimization=basic")
    assert other.ran() == ["compile", "verify", "package"]
    assert "config changed: target.options.graph_optimization" in other.stdout
    assert other.artifact != first.artifact and first.artifact.is_dir()


def test_editing_the_model_code_invalidates_the_export(workspace):
    workspace.recipe("cnn", cnn_recipe())
    workspace.run("+recipe=cnn", *QUICK)
    code = workspace.root / "tinynets.py"
    code.write_text(code.read_text().replace("padding=1), nn.BatchNorm2d", "padding=1, bias=False), nn.BatchNorm2d"))
    rebuilt = workspace.run("+recipe=cnn", *QUICK)
    assert rebuilt.ran()[:2] == ["export", "reference"]
    assert "input changed: factory code tinynets.py" in rebuilt.stdout


def test_corrupt_cache_entry_is_detected_and_rebuilt(workspace):
    workspace.recipe("cnn", cnn_recipe())
    first = workspace.run("+recipe=cnn", *QUICK)
    key = read_json(first.artifact / "manifest.json")["steps"]["export"]["key"]
    exported = workspace.cache / "entries" / key[:2] / key / "out" / "model.onnx"  # not compile's model.onnx
    data = bytearray(exported.read_bytes())
    data[len(data) // 2] ^= 0xFF
    exported.write_bytes(bytes(data))
    rebuilt = workspace.run("+recipe=cnn", *QUICK)
    assert "is corrupt (model.onnx does not match its sha256); rebuilding it" in rebuilt.stdout
    assert "export" in rebuilt.ran()
    assert workspace.run("+recipe=cnn", *QUICK).ran() == []


def test_threads_come_from_the_hardware_section(workspace):
    workspace.recipe("cnn", cnn_recipe())
    artifact = workspace.run("+recipe=cnn", *QUICK, "hardware.intra_op_threads=1", "hardware.inter_op_threads=1").artifact
    runtime = read_json(artifact / "manifest.json")["runtime"]
    assert runtime["intra_op_threads"] == 1 and runtime["inter_op_threads"] == 1
    assert runtime["runtime_optimization"] == "all"


def test_build_without_cache_leaves_no_scratch(workspace):
    workspace.recipe("cnn", cnn_recipe())
    artifact = workspace.run("+recipe=cnn", *QUICK, "cache=disabled").artifact
    assert (artifact / "manifest.json").is_file()
    assert not workspace.cache.exists()


def test_a_changed_limit_reaches_the_artifact(workspace):
    """The verdict is part of verify's output: the package, which writes it into the manifest (and
    serve.py --selftest, which reads the limits from there), is rebuilt with it."""
    workspace.recipe("cnn", cnn_recipe())
    first = workspace.run("+recipe=cnn", *QUICK)
    changed = workspace.run("+recipe=cnn", *QUICK, "verify.tolerances.fp32.max_rel_l2=0.0002")
    assert changed.ran() == ["verify", "package"] and changed.artifact != first.artifact
    manifest = read_json(changed.artifact / "manifest.json")
    assert manifest["verification"]["tolerance"]["max_rel_l2"] == 0.0002
    assert manifest["steps"]["verify"]["key"] != read_json(first.artifact / "manifest.json")["steps"]["verify"]["key"]
