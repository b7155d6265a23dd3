"""Source frontends: factory + state_dict, TorchScript, ONNX (multi-input, dynamic dims), exporters."""

import sys

import numpy as np
import pytest

from conftest import QUICK, cnn_recipe, onnx_recipe, read_json

pytestmark = pytest.mark.torch


def _torch_and_nets(workspace):
    import torch

    sys.path.insert(0, str(workspace.root))
    import tinynets

    return torch, tinynets


def test_state_dict_weights_are_used_for_export_and_reference(workspace):
    torch, tinynets = _torch_and_nets(workspace)
    torch.manual_seed(123)
    trained = tinynets.small_cnn()
    torch.save(trained.state_dict(), workspace.root / "cnn.pt")
    workspace.recipe("cnn", cnn_recipe(weights="cnn.pt"))
    artifact = workspace.run("+recipe=cnn", *QUICK).artifact
    samples = np.load(artifact / "samples.npz")
    with torch.no_grad():
        expected = trained.eval()(torch.from_numpy(samples["0/input/image"])).numpy()
    np.testing.assert_allclose(samples["0/output/logits"], expected, rtol=1e-5, atol=1e-6)


def test_torchscript_file(workspace):
    torch, tinynets = _torch_and_nets(workspace)
    torch.manual_seed(5)
    torch.jit.save(torch.jit.script(tinynets.small_cnn().eval()), workspace.root / "cnn.ts")
    workspace.recipe("ts", cnn_recipe(source="torchscript", factory=None, kwargs={}, path="cnn.ts"))
    artifact = workspace.run("+recipe=ts", *QUICK).artifact
    assert read_json(artifact / "report.json")["passed"]


def test_torchscript_file_that_is_not_one(workspace):
    (workspace.root / "junk.ts").write_bytes(b"not a model")
    workspace.recipe("ts", cnn_recipe(source="torchscript", factory=None, kwargs={}, path="junk.ts"))
    result = workspace.run("+recipe=ts", *QUICK, check=False)
    assert result.code == 1 and "model.path: not a TorchScript file" in result.stderr


def test_onnx_file_with_two_inputs_two_outputs_and_dynamic_batch(workspace, two_heads_onnx):
    workspace.recipe("heads", onnx_recipe(two_heads_onnx))
    artifact = workspace.run("+recipe=heads", *QUICK).artifact
    report = read_json(artifact / "report.json")
    assert report["passed"] and set(report["outputs"]) == {"score", "embedding"}
    assert report["latency"]["items_per_run"] == 3
    samples = np.load(artifact / "samples.npz")
    # 4 samples alone, then a batch of each other size: 1 and 3 (verify.sizes), and model.dims.n=3
    assert [samples[f"{case}/input/image"].shape for case in range(5)] == [(1, 3, 16, 16)] * 4 + [(3, 3, 16, 16)]


def test_an_onnx_file_with_external_data_builds_an_artifact_that_holds_its_data(workspace, two_heads_onnx):
    """ONNX Runtime saved its optimized graph with references to the input's data file, not in the artifact."""
    import onnx

    external = workspace.root / "ext" / "heads.onnx"
    external.parent.mkdir()
    onnx.save_model(onnx.load(str(two_heads_onnx)), str(external), save_as_external_data=True, location="heads.onnx.data",
                    size_threshold=0)
    workspace.recipe("heads", onnx_recipe(external))
    artifact = workspace.run("+recipe=heads", *QUICK).artifact
    model_dir = artifact / "model_repository" / "heads" / "1"
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert read_json(artifact / "report.json")["passed"]


def test_onnx_recipe_must_match_the_graph(workspace, two_heads_onnx):
    recipe = onnx_recipe(two_heads_onnx)
    recipe["model"]["outputs"] = ["score"]
    workspace.recipe("heads", recipe)
    result = workspace.run("+recipe=heads", *QUICK, check=False)
    assert result.code == 1 and "model.outputs" in result.stderr and "['score', 'embedding']" in result.stderr


def test_dynamo_exporter(workspace):
    workspace.recipe("cnn", cnn_recipe(exporter="dynamo"))
    artifact = workspace.run("+recipe=cnn", *QUICK).artifact
    manifest = read_json(artifact / "manifest.json")
    assert manifest["config"]["model"]["exporter"] == "dynamo"
    assert read_json(artifact / "report.json")["passed"]


@pytest.mark.parametrize(("change", "message"), [
    ({"shape": ["n", 3, 16, 15]}, "model.inputs[0].shape: input 'image' has size 16 at axis 3 in the model, not 15"),
    ({"shape": ["n", 3, 16]}, "model.inputs[0].shape: input 'image' has shape ['n', 3, 16, 16] in the model"),
    ({"dtype": "float16"}, "model.inputs[0].dtype: input 'image' is float32 in the model, not float16 (fix: set it to float32)"),
])
def test_an_onnx_model_declared_with_another_shape_or_dtype_is_named(workspace, two_heads_onnx, change, message):
    """ONNX Runtime said only `INVALID_ARGUMENT : Got invalid dimensions for input: image`, steps later."""
    recipe = onnx_recipe(two_heads_onnx)
    recipe["model"]["inputs"][0].update(change)
    workspace.recipe("heads", recipe)
    result = workspace.run("+recipe=heads", *QUICK, check=False)
    assert result.code == 1 and f"error: {message}" in result.stderr, result.stderr
