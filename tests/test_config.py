"""Recipe selection and configuration errors: one line naming the key and the valid choices."""

import pytest

from conftest import cnn_recipe


def _one_error_line(result) -> str:
    assert result.code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def test_unknown_recipe_lists_the_recipes(workspace):
    workspace.recipe("mine", cnn_recipe())
    line = _one_error_line(workspace.run("+recipe=nosuch", check=False))
    assert "recipe: no recipe named 'nosuch'" in line
    assert "mine" in line and "resnet50" in line and "tiny" in line


def test_typo_in_an_override_key(workspace):
    workspace.recipe("cnn", cnn_recipe())
    line = _one_error_line(workspace.run("+recipe=cnn", "target.precison=fp32", check=False))
    assert "target.precison: no such key" in line
    assert "precision" in line and "options" in line
    options = _one_error_line(workspace.run("+recipe=cnn", "target.options.graph_optimisation=basic", check=False))
    assert options == ("error: target.options.graph_optimisation: no such key "
                       "(fix: valid keys of target.options: graph_optimization)")
    added = _one_error_line(workspace.run("+recipe=cnn", "+target.options.streams=2", "mode=plan", check=False))
    assert added == ("error: target.options.streams: no such key "
                     "(fix: valid keys of target.options for onnxruntime: graph_optimization)")


def test_typo_in_a_recipe_file(workspace):
    recipe = cnn_recipe()
    recipe["model"]["factori"] = recipe["model"].pop("factory")
    workspace.recipe("cnn", recipe)
    line = _one_error_line(workspace.run("+recipe=cnn", check=False))
    assert "model.factori: no such key" in line and "factory" in line


def test_unknown_group_option(workspace):
    workspace.recipe("cnn", cnn_recipe())
    line = _one_error_line(workspace.run("+recipe=cnn", "target=onnxruntime_fp3", check=False))
    assert "target: no option 'onnxruntime_fp3' (fix: choose one of: auto, mindspore, onnxruntime_fp32, onnxruntime_int8, openvino_bf16, openvino_fp16" in line


def test_wrong_value_type_names_the_key(workspace):
    workspace.recipe("cnn", cnn_recipe())
    line = _one_error_line(workspace.run("+recipe=cnn", "hardware.intra_op_threads=many", check=False))
    assert "hardware.intra_op_threads" in line


def test_invalid_mode_lists_the_modes(workspace):
    workspace.recipe("cnn", cnn_recipe())
    line = _one_error_line(workspace.run("+recipe=cnn", "mode=deploy", check=False))
    assert "mode: 'deploy' is not valid" in line and "build, plan, check" in line


def test_missing_mandatory_value(workspace):
    recipe = cnn_recipe()
    del recipe["model"]["source"]
    workspace.recipe("cnn", recipe)
    line = _one_error_line(workspace.run("+recipe=cnn", check=False))
    assert "model.source" in line


@pytest.mark.parametrize("bad", [{"shape": ["batch", 3, 0, 16]}, {"dtype": "float13"}, {"shape": ["rows", 3, 16, 16]}])
def test_bad_input_specs(workspace, bad):
    recipe = cnn_recipe()
    recipe["model"]["inputs"][0].update(bad)
    workspace.recipe("cnn", recipe)
    line = _one_error_line(workspace.run("+recipe=cnn", "mode=plan", check=False))
    assert "model." in line


def test_a_users_recipe_shadows_the_packaged_one(workspace):
    workspace.recipe("resnet50", cnn_recipe())
    result = workspace.run("+recipe=resnet50", "--cfg", "job")
    assert "tinynets.small_cnn" in result.stdout and "torchvision" not in result.stdout


def test_no_arguments_selects_the_small_recipe(workspace):
    result = workspace.run("mode=plan")
    assert "recipe tiny" in result.stdout


def test_help_describes_the_usage(workspace):
    result = workspace.run("--help")
    assert "+recipe=NAME" in result.stdout and "mode=plan" in result.stdout
    assert "onnxruntime_fp32" in result.stdout


def test_appending_an_undeclared_key_is_a_typo(workspace):
    workspace.recipe("cnn", cnn_recipe())
    line = _one_error_line(workspace.run("+recipe=cnn", "+hardware.thread=2", "mode=plan", check=False))
    assert "hardware.thread: no such key" in line and "intra_op_threads" in line


def test_a_broken_recipe_blocks_only_itself(workspace):
    """A typo in one recipe file of ./recipes used to fail every build, the shipped recipes' too."""
    workspace.recipe("cnn", cnn_recipe())
    (workspace.root / "recipes" / "broken.yaml").write_text("model: [unclosed\n")
    other = workspace.run("+recipe=cnn", "mode=plan")
    assert "warning: " in other.stderr and "broken.yaml: cannot parse recipe at line 2, column 1 (expected ',' or ']'" in other.stderr
    itself = workspace.run("+recipe=broken", "mode=plan", check=False)
    assert itself.code == 1 and "broken.yaml: cannot parse recipe at line 2, column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence started at line 1, column 8)" in itself.stderr
    (workspace.root / "recipes" / "listed.yaml").write_text("- model\n- target\n")
    listed = workspace.run("+recipe=listed", "mode=plan", check=False)
    assert listed.code == 1 and "listed.yaml: cannot parse recipe: a recipe is a mapping of config keys" in listed.stderr
