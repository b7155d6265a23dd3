"""Framework targets and the MindSpore source: ONNX -> PyTorch (an ExportedProgram) and ONNX ->
TensorFlow (a SavedModel), hence PyTorch -> TensorFlow and TensorFlow -> PyTorch conversions, each
verified against the source model and served by its own artifact; a MindSpore network with and
without a checkpoint; and target=mindspore failing with its explanation."""

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from conftest import QUICK, cnn_recipe, python, read_json
from test_tensorflow import save_tiny_keras


def selftest(artifact) -> str:
    proc = subprocess.run([sys.executable, "serve.py", "--selftest"], cwd=artifact, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def tf_serving_request(artifact: Path, name: str) -> None:
    """What TensorFlow Serving would do with the artifact, short of its server binary (not installable here):
    parse tf_serving/models.config, scan the base path for version directories, build the PredictRequest a
    client sends (tensorflow-serving-api), check it against the SavedModel's serving_default signature, and
    run it through TensorFlow's own loader: the answer must be the artifact's verified one."""
    python(f"""
import json, os
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2
config = text_format.Parse(open("tf_serving/models.config").read(), model_server_config_pb2.ModelServerConfig())
model, = config.model_config_list.config
assert model.name == {name!r} and model.model_platform == "tensorflow", model
versions = [entry for entry in os.listdir(model.base_path) if entry.isdigit()]
assert versions == ["1"], versions
loaded = tf.saved_model.load(os.path.join(model.base_path, "1"), tags=["serve"])
signature = loaded.signatures["serving_default"]
samples = np.load("samples.npz")
request = predict_pb2.PredictRequest()
request.model_spec.name = model.name
request.model_spec.signature_name = "serving_default"
for key, spec in signature.structured_input_signature[1].items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(samples["0/input/" + spec.name]))
request = predict_pb2.PredictRequest.FromString(request.SerializeToString())  # as it travels
feeds = {{key: tf.make_ndarray(tensor) for key, tensor in request.inputs.items()}}
for key, spec in signature.structured_input_signature[1].items():
    assert feeds[key].dtype == spec.dtype.as_numpy_dtype and spec.shape.is_compatible_with(feeds[key].shape)
answers = signature(**{{key: tf.constant(value) for key, value in feeds.items()}})
for output, value in answers.items():
    assert np.allclose(value.numpy(), samples["0/artifact/" + output], rtol=1e-5, atol=1e-6), output
""", artifact)


def converter(artifact) -> dict:
    return read_json(artifact / "manifest.json")["runtime"]["converter"]


@pytest.mark.torch
@pytest.mark.tensorflow
def test_pytorch_to_tensorflow(workspace):
    workspace.recipe("cnn", cnn_recipe())
    artifact = workspace.run("+recipe=cnn", *QUICK, "target=tensorflow").artifact
    report = read_json(artifact / "report.json")
    assert report["passed"] and report["outputs"]["logits"]["metrics"]["rel_l2"] < 1e-5
    assert converter(artifact) == {"name": "onnx2tf", "version": metadata.version("onnx2tf"), "format": "SavedModel",
                                   "inputs_layout_kept": ["image"]}
    assert (artifact / "model_repository/cnn/1/1/saved_model.pb").is_file()  # one copy: Triton's model file "1",
    pbtxt = (artifact / "model_repository/cnn/config.pbtxt").read_text()  # TensorFlow Serving's version 1
    assert 'platform: "tensorflow_savedmodel"' in pbtxt and 'default_model_filename: "1"' in pbtxt
    tf_serving_request(artifact, "cnn")
    assert f"tensorflow=={metadata.version('tensorflow')}" in (artifact / "requirements.txt").read_text()
    assert "logits: rel_l2" in selftest(artifact)
    # A cold rebuild (another cache) saves the same SavedModel: TensorFlow's random fingerprint uuid is
    # derived from the model's own hashes, so the lock and the artifact's path stay the same.
    lock = (workspace.root / "recipes" / "cnn.lock.json").read_text()
    again = workspace.run("+recipe=cnn", *QUICK, "target=tensorflow", f"cache.dir={workspace.root / 'other-cache'}")
    assert again.artifact == artifact and "compile       running" in again.stdout
    assert (workspace.root / "recipes" / "cnn.lock.json").read_text() == lock


@pytest.mark.torch
@pytest.mark.tensorflow
def test_tensorflow_to_pytorch(workspace):
    save_tiny_keras(workspace, "tiny.keras")
    workspace.recipe("k", {"model": {"source": "tensorflow", "path": "tiny.keras", "outputs": ["scores"]}})
    artifact = workspace.run("+recipe=k", *QUICK, "target=pytorch").artifact
    report = read_json(artifact / "report.json")
    assert report["passed"] and report["outputs"]["scores"]["metrics"]["rel_l2"] < 1e-5
    assert converter(artifact)["name"] == "onnx2torch"
    assert converter(artifact)["version"] == metadata.version("onnx2torch")
    assert (artifact / "model_repository/k/1/model.pt2").is_file()
    assert not (artifact / "model_repository/k/config.pbtxt").exists()  # Triton cannot load an ExportedProgram
    assert "scores: rel_l2" in selftest(artifact)


@pytest.mark.torch
@pytest.mark.tensorflow
def test_a_conversion_that_changes_results_fails_the_build(workspace):
    """The usual gate: onnx2tf's SavedModel differs from PyTorch by ~1e-7 (rel L2), so a tolerance
    below that fails the build, keeps the report for inspection and writes no artifact."""
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", *QUICK, "target=tensorflow", "verify.tolerances.fp32.max_rel_l2=1e-12",
                           check=False)
    assert result.code == 1
    assert "verify.tolerances.fp32: verification failed: output 'logits' rel_l2 = " in result.stderr
    assert "(report kept in " in result.stderr
    assert not (workspace.root / "artifacts").exists()


@pytest.mark.torch
def test_an_unconvertible_graph_is_a_clear_error(workspace):
    """The dynamo exporter writes Reshape(allowzero=1), which onnx2torch does not implement."""
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", *QUICK, "target=pytorch", "model.exporter=dynamo", check=False)
    assert result.code == 1
    assert "error: target.backend: onnx2torch cannot convert this model: \"allowzero=1\" is not implemented" in result.stderr


@pytest.mark.mindspore
def test_mindspore_source_on_onnxruntime_and_pytorch(workspace):
    result = workspace.run("-m", "+recipe=lenet_mindspore", *QUICK, "target=onnxruntime_fp32,pytorch")
    sweep = next((workspace.root / "mdbuild-outputs" / "sweeps").glob("*/*"))
    rows = json.loads((sweep / "summary.json").read_text())
    assert [row["target"] for row in rows] == ["onnxruntime_fp32", "pytorch"] and all(row["passed"] for row in rows)
    assert sum(" export        running" in line for line in result.stdout.splitlines()) == 1
    manifest = read_json(next((workspace.root / "artifacts").glob("lenet_mindspore-onnxruntime_fp32-*")) / "manifest.json")
    assert manifest["libraries"]["mindspore"] == metadata.version("mindspore")


@pytest.mark.mindspore
def test_mindspore_checkpoint(workspace):
    python("""
import mindspore as ms
from builder.examples.lenet import lenet5
ms.set_seed(7)
ms.save_checkpoint(lenet5(), "trained.ckpt")
ms.save_checkpoint(lenet5(num_classes=5), "other.ckpt")
""", workspace.root)
    seeded = workspace.run("+recipe=lenet_mindspore", *QUICK).artifact
    loaded = workspace.run("+recipe=lenet_mindspore", *QUICK, "model.weights=trained.ckpt").artifact
    assert read_json(loaded / "report.json")["passed"]
    with np.load(seeded / "samples.npz") as first, np.load(loaded / "samples.npz") as second:
        assert np.array_equal(first["0/input/input"], second["0/input/input"])
        assert not np.allclose(first["0/output/logits"], second["0/output/logits"])  # the checkpoint's weights ran
    result = workspace.run("+recipe=lenet_mindspore", *QUICK, "model.weights=other.ckpt", check=False)
    assert result.code == 1 and "model.weights: checkpoint" in result.stderr and "does not fit the network" in result.stderr


def test_mindspore_target_explains_why_it_cannot_be_built(workspace):
    result = workspace.run("+recipe=lenet_mindspore", "target=mindspore", check=False)
    lines = result.stderr.strip().splitlines()
    assert result.code == 1 and len(lines) == 1
    assert lines[0].startswith("error: target.backend: no installable converter turns ONNX into MindSpore")
    assert "mindconverter" in lines[0] and "fix: deploy MindSpore models with" in lines[0]
