"""The main job: the shipped ResNet-50 recipe on every CPU target, verified, sharing the export."""

import json
from pathlib import Path

import pytest

from conftest import QUICK, read_json

pytestmark = [pytest.mark.slow, pytest.mark.torch]
TARGETS = ["onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_fp16", "openvino_int8"]


def test_resnet50_onnxruntime_fp32(workspace):
    result = workspace.run("+recipe=resnet50", "target=onnxruntime_fp32", *QUICK)
    report = read_json(result.artifact / "report.json")
    assert report["passed"]
    logits = report["outputs"]["logits"]["metrics"]
    assert logits["rel_l2"] < 1e-4 and logits["min_cosine"] > 0.99999
    manifest = read_json(result.artifact / "manifest.json")
    assert manifest["libraries"]["torchvision"]  # the factory's distribution is part of the export key
    assert workspace.run("+recipe=resnet50", "target=onnxruntime_fp32", *QUICK).ran() == []


def test_resnet50_every_cpu_target_in_one_sweep(workspace):
    result = workspace.run("-m", "+recipe=resnet50", *QUICK, "calibration.samples=8", "target=" + ",".join(TARGETS))
    exports = [line.split()[2] for line in result.stdout.splitlines()
               if line.startswith("[") and line.split()[1] == "export" and line.split()[2] in ("running", "cached")]
    assert exports == ["running"] + ["cached"] * 4
    sweep = next((workspace.root / "mdbuild-outputs" / "sweeps").glob("*/*"))
    rows = json.loads((sweep / "summary.json").read_text())
    assert [row["target"] for row in rows] == TARGETS and all(row["passed"] for row in rows)
    for row in rows:
        report = read_json(Path(row["artifact"]) / "report.json")
        if row["precision"] == "int8":  # calibrated on random data by the recipe's explicit opt-in
            assert "RANDOM data" in report["warnings"][0]
            assert report["outputs"]["logits"]["metrics"]["min_cosine"] > 0.99
        else:
            assert report["warnings"] == []
