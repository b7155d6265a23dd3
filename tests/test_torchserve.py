"""The pytorch target's TorchServe model archive, served by a real TorchServe (Java) on 127.0.0.1: its
answers are the artifact's own (the outputs verification recorded in samples.npz)."""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import QUICK, cnn_recipe
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from _common import torchserve  # noqa: E402 - the benchmarks' helpers are not a package
from test_serving import Served

pytestmark = [pytest.mark.torch,
              pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe runs on Java (17 on these machines)")]


def _post(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_torchserve_serves_the_archive_with_the_artifacts_answers(workspace, tmp_path):
    """Tensors (KServe v2 JSON) and an image (the recipe's preprocessing, top classes with labels), against the
    outputs verification recorded and the artifact's own server's /classify; and an onnxruntime target's
    archive (serving.torchserve=true) in the same TorchServe, against its own recorded outputs."""
    from PIL import Image

    (workspace.root / "labels.txt").write_text("\n".join(f"class-{i}" for i in range(5)) + "\n")
    preprocess = {"resize": 20, "center_crop": 16, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    workspace.recipe("cnn", {**cnn_recipe(), "preprocess": preprocess, "serving": {"labels": "labels.txt", "top_k": 3}})
    artifact = workspace.run("+recipe=cnn", *QUICK, "target=pytorch").artifact
    onnx = workspace.run("+recipe=cnn", *QUICK, "target=onnxruntime_fp32", "serving.torchserve=true").artifact
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    photo = (tmp_path / "photo.png").read_bytes()
    archive = artifact / "torchserve" / "cnn.mar"
    assert "torchserve/cnn.mar" in json.loads((artifact / "manifest.json").read_text())["files"]  # checked at start
    with torchserve({"cnn": archive, "cnn_onnx": onnx / "torchserve" / "cnn.mar"}, tmp_path) as base:
        for name, built in (("cnn", artifact), ("cnn_onnx", onnx)):
            samples = np.load(built / "samples.npz")
            image = samples["0/input/image"]
            body = json.dumps({"inputs": [{"name": "image", "shape": list(image.shape), "datatype": "FP32",
                                           "data": image.reshape(-1).tolist()}]}).encode()
            request = urllib.request.Request(f"{base}/predictions/{name}", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                outputs = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
                           for o in json.loads(answer.read())["outputs"]}
            np.testing.assert_allclose(outputs["logits"], samples["0/artifact/logits"], rtol=1e-5, atol=1e-6)
            assert answer.headers["Content-Type"] == "application/json"
        samples = np.load(artifact / "samples.npz")
        nan = json.dumps({"inputs": [{"name": "image", "shape": list(image.shape), "datatype": "FP32",
                                      "data": [float("nan")] * image.size}]}).encode()
        for bad, message in ((nan, "input 'image' holds NaN or Inf values"), (body.replace(b'"FP32"', b'"INT64"'),
                             "input 'image' has datatype 'INT64'; expected FP32"), (b"GIF89a", "the body is not valid JSON")):
            refused = _post(f"{base}/predictions/cnn", bad)
            assert refused[0] == 400 and message in refused[1], refused  # what the artifact's own server refuses
        image = urllib.request.Request(f"{base}/predictions/cnn", data=photo,
                                       headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(image, timeout=30) as answer:
            served_by_torchserve = json.loads(answer.read())["predictions"]
        own = Served(artifact)
        try:
            status, _, data = own.request("POST", "/v2/models/cnn/classify", photo, {"Content-Type": "image/png"})
        finally:
            own.stop()
    assert status == 200 and len(served_by_torchserve) == 3
    for theirs, ours in zip(served_by_torchserve, json.loads(data)["predictions"]):
        assert theirs["index"] == ours["index"] and theirs["label"] == ours["label"]
        assert abs(theirs["score"] - ours["score"]) < 1e-5


def test_the_archive_is_the_same_for_the_same_build(workspace):
    """torch-model-archiver stamps the time into it; the build fixes it, so two builds give one archive.
    serving.torchserve=false leaves it out: another package key, the same model steps."""
    workspace.recipe("cnn", cnn_recipe())
    first = workspace.run("+recipe=cnn", *QUICK, "target=pytorch").artifact
    again = workspace.run("+recipe=cnn", *QUICK, "target=pytorch", f"cache.dir={workspace.root / 'other-cache'}",
                          "output.dir=elsewhere")
    assert "package       running" in again.stdout
    assert (again.artifact / "torchserve" / "cnn.mar").read_bytes() == (first / "torchserve" / "cnn.mar").read_bytes()
    without = workspace.run("+recipe=cnn", *QUICK, "target=pytorch", "serving.torchserve=false")
    assert without.ran() == ["package"] and not (without.artifact / "torchserve").exists()


def test_what_the_archive_ships_is_in_the_package_key():
    """The archive's writer is named by a string (no import finds it): the plan hashes it and what it ships."""
    from backends import get_backend
    from builder.plan import TORCHSERVE, _serving_files_code

    shipped = {path.name for path in _serving_files_code(TORCHSERVE).values()}
    assert {"torchserve.py", "torchserve_handler.py", "protocol.py", "preprocess.py"} <= shipped
    assert "tf_serving.py" in {path.name for path in _serving_files_code(get_backend("tensorflow").serving_files).values()}
