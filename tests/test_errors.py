"""Failures: a clear one-line message, a non-zero exit, and nothing half-written left behind."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import MDBUILD, QUICK, cnn_recipe, hiding, onnx_recipe, read_json

pytestmark = pytest.mark.torch


def assert_nothing_left(workspace, entries_before=()):
    assert not (workspace.root / "artifacts").exists() or not any((workspace.root / "artifacts").iterdir())
    assert workspace.cache_entries() == list(entries_before)
    tmp = workspace.cache / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir())


def test_missing_model_file(workspace, tmp_path):
    workspace.recipe("gone", onnx_recipe(tmp_path / "missing.onnx"))
    result = workspace.run("+recipe=gone", check=False)
    assert result.code == 1 and "model.path: file not found" in result.stderr and "missing.onnx" in result.stderr
    assert_nothing_left(workspace)


def test_missing_weights_file(workspace):
    workspace.recipe("cnn", cnn_recipe(weights="nowhere/cnn.pt"))
    result = workspace.run("+recipe=cnn", check=False)
    assert result.code == 1 and "model.weights: file not found" in result.stderr
    assert_nothing_left(workspace)


def test_checkpoint_that_does_not_fit(workspace):
    import torch

    torch.save({"head.weight": torch.zeros(3, 3)}, workspace.root / "bad.pt")
    workspace.recipe("cnn", cnn_recipe(weights="bad.pt"))
    result = workspace.run("+recipe=cnn", *QUICK, check=False)
    assert result.code == 1 and "model.weights: checkpoint" in result.stderr and "does not fit the model" in result.stderr
    assert "Missing key(s)" in result.stderr
    assert_nothing_left(workspace)


def test_checkpoint_with_pickled_code_is_refused(workspace):
    import torch

    sys.path.insert(0, str(workspace.root))
    import tinynets

    torch.save(tinynets.small_cnn(), workspace.root / "pickled.pt")  # a whole pickled module, not a state_dict
    workspace.recipe("cnn", cnn_recipe(weights="pickled.pt"))
    result = workspace.run("+recipe=cnn", *QUICK, check=False)
    assert result.code == 1 and "weights_only=True" in result.stderr
    assert_nothing_left(workspace)


def test_operator_the_exporter_cannot_handle(workspace):
    workspace.recipe("bad", cnn_recipe(factory="tinynets.unexportable", kwargs={},
                                       inputs=[{"name": "x", "shape": [1, 4], "dtype": "float32"}], dims={}))
    result = workspace.run("+recipe=bad", *QUICK, check=False)
    assert result.code == 1
    assert "cannot convert operator mdbuild_tests::scramble at opset 18" in result.stderr
    assert "model.factory" in result.stderr and "Traceback" not in result.stderr
    assert_nothing_left(workspace)


@pytest.mark.parametrize(("hidden", "args", "where", "extra", "named"), [
    ("onnxruntime", ["+recipe=cnn"], "target.backend", "onnxruntime", "onnxruntime"),
    ("onnx2torch", ["+recipe=cnn", "target=pytorch"], "target.backend", "torch", "onnx2torch"),
    ("onnx2tf", ["+recipe=cnn", "target=tensorflow"], "target.backend", "tensorflow", "onnx2tf"),
    ("mindspore", ["+recipe=lenet_mindspore"], "model.source", "mindspore", "mindspore"),
    ("tensorrt_rtx_bindings", ["+recipe=cnn", "target=tensorrt_fp16", "target.options.flavor=rtx"],
     "target.options.flavor", "tensorrt-rtx", "tensorrt-rtx-cu12-bindings"),
])
def test_a_missing_package_names_its_extra(workspace, tmp_path, hidden, args, where, extra, named):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run(*args, check=False, env=hiding(tmp_path / "hide", hidden))
    assert result.code == 1
    assert f"{where}: the Python package '{named}' is not installed" in result.stderr
    assert f"pip install 'mdbuild[{extra}]'" in result.stderr
    assert_nothing_left(workspace)


def test_failed_gate_fails_the_build_and_keeps_the_report(workspace):
    workspace.recipe("cnn", cnn_recipe())
    failed = workspace.run("+recipe=cnn", *QUICK, "verify.tolerances.fp32.max_rel_l2=1e-15", check=False)
    assert failed.code == 1
    line = failed.stderr.strip()
    assert "verify.tolerances.fp32: verification failed: output 'logits' rel_l2" in line
    assert "> max_rel_l2 1e-15" in line and "fix:" in line
    kept = line.split("report kept in ")[1].split(")")[0]
    assert '"passed": false' in open(os.path.join(kept, "report.json")).read()
    assert not (workspace.root / "artifacts").exists()
    # The failing verification was not cached: the same build runs it again, and passes once fixed.
    assert workspace.run("+recipe=cnn", *QUICK).ran() == ["verify", "package"]


def test_a_step_that_exits_fails_the_build_with_one_line(workspace):
    workspace.recipe("cnn", cnn_recipe(factory="tinynets.exits", kwargs={}))
    result = workspace.run("+recipe=cnn", *QUICK, check=False)
    assert result.code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: export: the step exited (SystemExit 3)")
    assert workspace.cache_entries() == [] and not (workspace.root / "artifacts").exists()


@pytest.mark.tensorflow
def test_a_crash_in_an_isolated_step_fails_the_build_with_one_line(workspace):
    """TensorFlow steps run in their own process: a segfault there is an error, not a dead build."""
    (workspace.root / "crashers.py").write_text("import ctypes\n\ndef segfault():\n    ctypes.string_at(0)\n")
    workspace.recipe("tf", {"model": {"source": "tensorflow", "factory": "crashers.segfault",
                                      "inputs": [{"name": "x", "shape": [1, 4]}]}})
    result = workspace.run("+recipe=tf", *QUICK, check=False)
    assert result.code == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: export: the step's process died (signal SIGSEGV) without an error message"), result.stderr
    assert workspace.cache_entries() == [] and not (workspace.root / "artifacts").exists()


def test_a_killed_build_leaves_no_half_entry(workspace):
    workspace.recipe("cnn", cnn_recipe())
    env = {**os.environ, "MDBUILD_CACHE_DIR": str(workspace.cache), "PYTHONPATH": str(workspace.root)}
    proc = subprocess.Popen([*MDBUILD, "+recipe=cnn", *QUICK], cwd=workspace.root, env=env,
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.split()[1:3] == ["export", "running"]:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert workspace.cache_entries() == []
    assert any((workspace.cache / "tmp").iterdir())  # the dead build's work directory
    result = workspace.run("+recipe=cnn", *QUICK)
    assert result.ran()[0] == "export"
    assert not any((workspace.cache / "tmp").iterdir())
    assert sys.executable  # the rebuilt artifact is complete:
    assert (result.artifact / "manifest.json").is_file()


@pytest.mark.parametrize(("bias", "why"), [(0.0, "is (near) zero on every verification input (largest magnitude 0)"),
                                          (0.5, "is the same for all 4 verification samples")])
def test_a_source_output_that_ignores_its_inputs_fails_the_gate(workspace, bias, why):
    """An artifact could ignore its inputs and match such an output: the comparison proves nothing."""
    mlp = {"factory": "tinynets.fixed", "kwargs": {"bias": bias}, "inputs": [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}]}
    workspace.recipe("fixed", cnn_recipe(**mlp))
    result = workspace.run("+recipe=fixed", *QUICK, check=False)
    assert result.code == 1
    assert f"error: verify.allow_uninformative: verification failed: the source model's output 'logits' {why}: " \
           "comparing with it proves nothing" in result.stderr
    assert "model.weights" in result.stderr
    allowed = workspace.run("+recipe=fixed", *QUICK, "verify.allow_uninformative=[logits]")
    assert read_json(allowed.artifact / "report.json")["passed"]


def test_a_source_model_with_nan_outputs_is_named_before_any_target(workspace):
    workspace.recipe("undefined", cnn_recipe(factory="tinynets.undefined", kwargs={},
                                       inputs=[{"name": "x", "shape": ["batch", 4], "dtype": "float32"}]))
    result = workspace.run("+recipe=undefined", *QUICK, check=False)
    assert result.code == 1 and "[2/5] reference" in result.stdout and "compile" not in result.stdout
    assert "error: model.inputs: the source model's output 'logits' has NaN or Inf values on the verification " \
           "inputs" in result.stderr
    assert not (workspace.root / "artifacts").exists()  # the export stays cached: it is sound
