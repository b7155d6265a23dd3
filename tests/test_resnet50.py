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


@pytest.mark.tensorrt
def test_resnet50_tensorrt_engines_in_a_sweep_beside_a_cpu_target(workspace):
    """The mission's command: real TensorRT-RTX engines on a CPU-only host, fp16 and int8 Q/DQ; the sweep
    summary says their latency is not measured rather than dropping them."""
    targets = ["onnxruntime_fp32", "tensorrt_fp16", "tensorrt_int8"]
    workspace.run("-m", "+recipe=resnet50", *QUICK, "calibration.samples=8", "target=" + ",".join(targets))
    sweep = next((workspace.root / "mdbuild-outputs" / "sweeps").glob("*/*"))
    rows = {row["target"]: row for row in json.loads((sweep / "summary.json").read_text())}
    assert all(row["passed"] for row in rows.values())
    assert rows["tensorrt_fp16"]["rel_l2"] < 2e-3 and rows["tensorrt_int8"]["min_cosine"] > 0.99
    for target in targets[1:]:
        assert rows[target]["p50_ms"] is None and rows[target]["latency_note"] == "not measured: no GPU"
    assert "| tensorrt_fp16 | fp16 | - | " in (sweep / "summary.md").read_text()  # computed in: not known without a GPU
    assert "not measured: no GPU" in (sweep / "summary.md").read_text()
    fp32 = Path(rows["onnxruntime_fp32"]["artifact"]) / "model_repository" / "resnet50" / "1" / "model.onnx"
    engines = {t: Path(rows[t]["artifact"]) / "model_repository" / "resnet50" / "1" / "model.rtx.engine" for t in targets[1:]}
    # fp16 weights: about half the fp32 model (a few nodes stay fp32 by range); int8 weights smaller still.
    assert engines["tensorrt_fp16"].stat().st_size < 0.6 * fp32.stat().st_size
    assert engines["tensorrt_int8"].stat().st_size < 0.75 * engines["tensorrt_fp16"].stat().st_size
