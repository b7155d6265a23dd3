"""The generated serve.py, started for real and queried over HTTP (KServe v2 REST)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import QUICK, onnx_recipe, read_json

pytestmark = pytest.mark.onnxruntime


@pytest.fixture(scope="module")
def served(tmp_path_factory, two_heads_onnx):
    from conftest import Workspace

    root = tmp_path_factory.mktemp("serve")
    workspace = Workspace(root / "work", root / "cache")
    workspace.recipe("heads", onnx_recipe(two_heads_onnx))
    artifact = workspace.run("+recipe=heads", *QUICK).artifact
    # serve.py must need nothing but its requirements: run it from the artifact with no repo on the path.
    proc = subprocess.Popen([sys.executable, "-I", str(artifact / "serve.py"), "--port", "0"], cwd=artifact,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving heads on http://127.0.0.1:"), line + proc.stderr.read()
    base = line.split(" on ", 1)[1].split("/v2/")[0]
    yield artifact, base
    proc.terminate()
    proc.wait(timeout=10)


def call(base: str, path: str, body=None, raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def tensor(name, array, datatype="FP32"):
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.ravel().tolist()}


def test_health_and_metadata(served):
    _, base = served
    assert call(base, "/v2/health/live") == (200, {"live": True})
    assert call(base, "/v2/health/ready") == (200, {"ready": True})
    assert call(base, "/v2/models/heads/ready")[0] == 200
    status, meta = call(base, "/v2/models/heads")
    assert status == 200 and meta["name"] == "heads" and meta["platform"] == "onnxruntime"
    assert {"name": "image", "datatype": "FP32", "shape": [-1, 3, 16, 16]} in meta["inputs"]
    assert [o["name"] for o in meta["outputs"]] == ["score", "embedding"]


def test_served_answer_equals_the_in_process_answer(served):
    artifact, base = served
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from backends.onnxruntime.runtime import load

    samples = np.load(artifact / "samples.npz")
    image, extra = samples["1/input/image"], samples["1/input/extra"]
    status, answer = call(base, "/v2/models/heads/infer",
                          {"id": "req-7", "inputs": [tensor("image", image), tensor("extra", extra)]})
    assert status == 200 and answer["id"] == "req-7" and answer["model_name"] == "heads"
    runtime = read_json(artifact / "manifest.json")["runtime"]
    model = load(artifact / runtime["model_dir"], runtime)
    expected = model.run({"image": image, "extra": extra})
    for output in answer["outputs"]:
        served_array = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        assert output["datatype"] == "FP32"
        np.testing.assert_array_equal(served_array, expected[output["name"]])
    np.testing.assert_allclose(expected["score"], samples["1/output/score"], rtol=1e-4, atol=1e-5)


def test_requested_outputs_and_dynamic_batch(served):
    _, base = served
    image, extra = np.zeros((5, 3, 16, 16), np.float32), np.ones((5, 4), np.float32)
    status, answer = call(base, "/v2/models/heads/infer", {
        "inputs": [tensor("image", image), tensor("extra", extra)], "outputs": [{"name": "embedding"}]})
    assert status == 200
    assert [(o["name"], o["shape"]) for o in answer["outputs"]] == [("embedding", [5, 6])]


@pytest.mark.parametrize("body, message", [
    ({"inputs": [{"name": "img", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}, "unknown input 'img'"),
    ({"inputs": [{"name": "extra", "shape": [1, 5], "datatype": "FP32", "data": [0] * 5}]}, "expected [-1, 4]"),
    ({"inputs": [{"name": "extra", "shape": [1, 4], "datatype": "INT64", "data": [0] * 4}]}, "expected FP32"),
    ({"inputs": [{"name": "extra", "shape": [1, 4], "datatype": "FP32", "data": [0] * 3}]}, "do not fill shape"),
    ({"inputs": [{"name": "extra", "shape": [1, 4], "datatype": "FP32", "data": ["a"] * 4}]}, "not a list of FP32"),
    ({"inputs": [{"name": "extra", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}, "missing inputs ['image']"),
    ({"input": []}, '"inputs" list'),
    ({"inputs": [], "outputs": [{"name": "nope"}]}, "missing inputs"),
])
def test_bad_requests_get_400_and_the_server_keeps_serving(served, body, message):
    _, base = served
    status, answer = call(base, "/v2/models/heads/infer", body)
    assert status == 400 and message in answer["error"]
    assert call(base, "/v2/health/live") == (200, {"live": True})


def test_malformed_json_and_unknown_routes(served):
    _, base = served
    status, answer = call(base, "/v2/models/heads/infer", raw=b'{"inputs": [')
    assert status == 400 and "not valid JSON" in answer["error"]
    assert call(base, "/v2/models/other/infer", {"inputs": []})[0] == 404
    assert call(base, "/v2/nothing")[0] == 404
    assert call(base, "/v2/health/ready")[0] == 200


def test_serve_script_imports_only_the_standard_library_and_its_requirements(served):
    import ast

    artifact, _ = served
    required = {line.split("==")[0] for line in (artifact / "requirements.txt").read_text().split()}
    assert required == {"numpy", "onnxruntime"}
    allowed = set(sys.stdlib_module_names) | required | {"serving"}
    # The gRPC server (serve.py --grpc-port only) imports what requirements-grpc.txt adds: grpcio, protobuf.
    optional = {"grpc_v2.py": {"grpc", "google"}}
    assert [line.split("==")[0] for line in (artifact / "requirements-grpc.txt").read_text().split()] == ["grpcio", "protobuf"]
    for path in [artifact / "serve.py", *sorted((artifact / "serving").glob("*.py"))]:
        allowed_here = allowed | optional.get(path.name, set())
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            top_level = node in tree.body
            for name in names:
                # Pillow is imported only on the image route, which exists when the recipe has labels.
                assert name.split(".")[0] in allowed_here or (name == "PIL" and not top_level), (path.name, name)
