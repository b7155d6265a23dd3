"""The main job: the shipped ResNet-50 recipe on ONNX Runtime, verified and served."""

import pytest

from conftest import QUICK, read_json

pytestmark = [pytest.mark.slow, pytest.mark.torch]


def test_resnet50_onnxruntime_fp32(workspace):
    result = workspace.run("+recipe=resnet50", "target=onnxruntime_fp32", *QUICK)
    report = read_json(result.artifact / "report.json")
    assert report["passed"]
    logits = report["outputs"]["logits"]["metrics"]
    assert logits["rel_l2"] < 1e-4 and logits["min_cosine"] > 0.99999
    manifest = read_json(result.artifact / "manifest.json")
    assert manifest["libraries"]["torchvision"]  # the factory's distribution is part of the export key
    assert workspace.run("+recipe=resnet50", "target=onnxruntime_fp32", *QUICK).ran() == []
