"""Lock files: written beside the recipe, checked without building, naming the first difference."""

import json

import pytest

from builder.keys import step_key
from conftest import QUICK, cnn_recipe, read_json

pytestmark = pytest.mark.torch


def _weights(workspace, seed: int):
    import sys

    import torch

    sys.path.insert(0, str(workspace.root))
    import tinynets

    torch.manual_seed(seed)
    path = workspace.root / "cnn.pt"
    torch.save(tinynets.small_cnn().state_dict(), path)
    return path


def test_build_writes_the_lock_beside_the_recipe_and_check_passes(workspace):
    recipe = workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", *QUICK)
    lock = recipe.with_name("cnn.lock.json")
    assert f"lock: {lock}" in result.stdout
    data = read_json(lock)
    entry = data["targets"]["onnxruntime_fp32"]
    assert [step["id"] for step in entry["steps"]] == ["export", "reference", "compile", "verify", "package"]
    assert all(len(step["key"]) == 64 and len(step["output_digest"]) == 64 for step in entry["steps"])
    check = workspace.run("+recipe=cnn", *QUICK, "mode=check")
    assert "lock check passed: 5 steps" in check.stdout


def test_check_names_the_changed_config_key(workspace):
    workspace.recipe("cnn", cnn_recipe())
    workspace.run("+recipe=cnn", *QUICK)
    failed = workspace.run("+recipe=cnn", *QUICK, "mode=check", "model.opset=17", check=False)
    assert failed.code == 1
    assert "lock check failed at step 'export': config changed: model.opset" in failed.stderr
    later = workspace.run("+recipe=cnn", *QUICK, "mode=check", "target.options.graph_optimization=basic", check=False)
    assert "at step 'compile': config changed: target.options.graph_optimization" in later.stderr


def test_check_names_a_changed_input_file(workspace):
    weights = _weights(workspace, seed=1)
    workspace.recipe("cnn", cnn_recipe(weights=str(weights)))
    workspace.run("+recipe=cnn", *QUICK)
    _weights(workspace, seed=2)
    failed = workspace.run("+recipe=cnn", *QUICK, "mode=check", check=False)
    assert "lock check failed at step 'export': input changed: weights" in failed.stderr


def test_check_names_a_changed_library_version(workspace):
    workspace.recipe("cnn", cnn_recipe())
    workspace.run("+recipe=cnn", *QUICK)
    lock = workspace.root / "recipes" / "cnn.lock.json"
    data = read_json(lock)
    compile_step = data["targets"]["onnxruntime_fp32"]["steps"][2]
    actual = compile_step["description"]["libraries"]["onnxruntime"]
    compile_step["description"]["libraries"]["onnxruntime"] = "1.0.0"  # as if locked on an older runtime
    compile_step["key"] = step_key(compile_step["description"])
    lock.write_text(json.dumps(data))
    failed = workspace.run("+recipe=cnn", *QUICK, "mode=check", check=False)
    assert f"at step 'compile': library changed: onnxruntime 1.0.0->{actual}" in failed.stderr


def test_lock_at_a_given_path_and_missing_entries(workspace):
    workspace.recipe("cnn", cnn_recipe())
    missing = workspace.run("+recipe=cnn", *QUICK, "mode=check", "lock.path=locks/cnn.json", check=False)
    assert "no lock file at" in missing.stderr and "lock.path" in missing.stderr
    workspace.run("+recipe=cnn", *QUICK, "lock.path=locks/cnn.json")
    assert (workspace.root / "locks" / "cnn.json").is_file()
    assert not (workspace.root / "recipes" / "cnn.lock.json").exists()
    workspace.run("+recipe=cnn", *QUICK, "mode=check", "lock.path=locks/cnn.json")


def test_a_lock_from_before_exact_keys_says_to_rebuild_once(workspace):
    recipe = workspace.recipe("cnn", cnn_recipe())
    lock = recipe.with_name("cnn.lock.json")
    lock.write_text(json.dumps({"schema": 1, "recipe": "cnn", "targets": {"onnxruntime_fp32": {"steps": []}}}))
    failed = workspace.run("+recipe=cnn", *QUICK, "mode=check", check=False)
    assert failed.code == 1 and "lock file schema 1 was written by an older mdbuild" in failed.stderr
    assert "rebuild each target once" in failed.stderr
    built = workspace.run("+recipe=cnn", *QUICK)  # the build starts the lock anew, and says so
    assert "was schema 1 (older keys): started anew, its entries dropped (targets: onnxruntime_fp32)" in built.stdout
    assert read_json(lock)["schema"] == 2
    assert "lock check passed" in workspace.run("+recipe=cnn", *QUICK, "mode=check").stdout

    lock.write_text(json.dumps({"schema": 3, "recipe": "cnn", "targets": {}}))
    newer = workspace.run("+recipe=cnn", *QUICK, "verify.seed=1", check=False)
    assert newer.code == 1 and "lock file schema 3 is newer than this mdbuild's (2)" in newer.stderr
    assert newer.ran() == []  # refused before any step ran
