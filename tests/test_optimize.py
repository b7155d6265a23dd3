"""Optimization steps as recipe data, every CPU target on a real trained model (digits), accuracy
gates, calibration data, and the sweep summary."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import QUICK, cnn_recipe, read_json

pytestmark = pytest.mark.torch
CPU_TARGETS = ["onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_fp16", "openvino_int8"]


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory):
    from conftest import Workspace

    root = tmp_path_factory.mktemp("digits")
    workspace = Workspace(root / "work", root / "cache")
    result = workspace.run("-m", "+recipe=digits", *QUICK, "target=" + ",".join(CPU_TARGETS))
    return workspace, result


def _steps(result, step):
    return [line.split()[2] for line in result.stdout.splitlines()
            if line.startswith("[") and line.split()[1] == step and line.split()[2] in ("running", "cached")]


def test_every_cpu_target_keeps_digits_accuracy_within_one_point(digits_sweep):
    _, result = digits_sweep
    artifacts = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("artifact: ")]
    assert len(artifacts) == 5
    for artifact in artifacts:
        report = json.load(open(f"{artifact}/report.json"))
        evaluation = report["evaluation"]
        assert report["passed"], artifact
        assert evaluation["samples"] == 540 and evaluation["metric"] == "top1"
        assert evaluation["source_score"] > 95, "the trained source model itself must be good"
        assert evaluation["drop"] <= 1.0, (artifact, evaluation)


def test_the_sweep_exports_once_and_calibrates_once(digits_sweep):
    _, result = digits_sweep
    assert _steps(result, "export") == ["running"] + ["cached"] * 4
    assert _steps(result, "reference") == ["running"] + ["cached"] * 4
    assert _steps(result, "calibration") == ["running", "cached"]
    assert _steps(result, "ort_quantize") == ["running"] and _steps(result, "nncf_quantize") == ["running"]


def test_artifacts_hold_the_backends_model_formats(digits_sweep):
    workspace, _ = digits_sweep
    artifacts = {p.name.rsplit("-", 1)[0]: p for p in (workspace.root / "artifacts").iterdir()}
    assert (artifacts["digits-openvino_fp32"] / "model_repository" / "digits" / "1" / "model.xml").is_file()
    assert (artifacts["digits-openvino_fp32"] / "model_repository" / "digits" / "1" / "model.bin").is_file()
    fp32_bin = (artifacts["digits-openvino_fp32"] / "model_repository" / "digits" / "1" / "model.bin").stat().st_size
    fp16_bin = (artifacts["digits-openvino_fp16"] / "model_repository" / "digits" / "1" / "model.bin").stat().st_size
    assert fp16_bin < 0.6 * fp32_bin
    runtime = read_json(artifacts["digits-openvino_fp16"] / "manifest.json")["runtime"]
    assert runtime["compute_precisions"] == ["fp16", "fp32"] and runtime["performance_hint"] == "latency"
    assert read_json(artifacts["digits-openvino_fp32"] / "manifest.json")["runtime"]["compute_precisions"] == ["fp32"]
    assert "openvino==" in (artifacts["digits-openvino_int8"] / "requirements.txt").read_text()
    int8 = read_json(artifacts["digits-onnxruntime_int8"] / "report.json")
    summary = int8["optimizations"][0]
    assert summary["step"] == "ort_quantize" and summary["mode"] == "static" and summary["activation_type"] == "uint8"
    assert summary["calibration_samples"] == 179 and not summary["random_calibration"] and int8["warnings"] == []
    import onnx

    graph = onnx.load(str(artifacts["digits-onnxruntime_int8"] / "model_repository" / "digits" / "1" / "model.onnx")).graph
    assert any("QuantizeLinear" in node.op_type or "QLinear" in node.op_type for node in graph.node)


def test_the_sweep_summary_tables_and_plots_every_job(digits_sweep):
    workspace, result = digits_sweep
    sweep = next((workspace.root / "mdbuild-outputs" / "sweeps").glob("*/*"))
    assert f"sweep summary: {sweep / 'summary.md'}" in result.stdout
    rows = json.loads((sweep / "summary.json").read_text())
    assert [row["target"] for row in rows] == CPU_TARGETS
    assert all(row["passed"] and row["p50_ms"] > 0 and row["score"] > 95 and row["model_bytes"] > 0 for row in rows)
    markdown = (sweep / "summary.md").read_text()
    assert "| target | precision | computed in | accuracy (top1) |" in markdown and "openvino_int8 | int8" in markdown
    page = (sweep / "summary.html").read_text()
    assert page.count("<circle") == 5 and "p50 latency (ms)" in page
    assert (sweep / "summary.svg").read_text().count("<circle") == 5 and "(summary.svg)" in markdown


def test_the_served_openvino_artifact_answers_like_the_report(digits_sweep, tmp_path):
    import subprocess
    import sys
    import urllib.request

    workspace, _ = digits_sweep
    artifact = next((workspace.root / "artifacts").glob("digits-openvino_int8-*"))
    proc = subprocess.Popen([sys.executable, "-I", str(artifact / "serve.py"), "--port", "0"], cwd=artifact,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = proc.stdout.readline().split(" on ", 1)[1].split("/v2/")[0]
        sample = np.load(artifact / "samples.npz")["0/input/image"]
        body = {"inputs": [{"name": "image", "shape": list(sample.shape), "datatype": "FP32",
                            "data": sample.ravel().tolist()}]}
        request = urllib.request.Request(base + "/v2/models/digits/infer", data=json.dumps(body).encode())
        answer = json.load(urllib.request.urlopen(request, timeout=30))
        sys.path.insert(0, str(workspace.root.parents[2]))
        from backends.openvino.runtime import load

        runtime = read_json(artifact / "manifest.json")["runtime"]
        expected = load(artifact / runtime["model_dir"], runtime).run({"image": sample})
        np.testing.assert_array_equal(np.asarray(answer["outputs"][0]["data"], np.float32).reshape(expected["logits"].shape),
                                      expected["logits"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_absurd_pruning_fails_the_build_naming_the_metric(workspace):
    result = workspace.run("+recipe=digits", *QUICK, "target=onnxruntime_fp32", "optimize=[prune]",
                           "prune.amount=0.97", check=False)
    assert result.code == 1
    kept = workspace.root / re.search(r"report kept in (\S+)\)", result.stderr).group(1) / "report.json"
    evaluation = read_json(kept)["evaluation"]
    assert evaluation["source_score"] > 95 and evaluation["drop"] > 1
    assert ("evaluation.max_drop: verification failed: " in result.stderr and
            f"top1 on the labelled set fell from {evaluation['source_score']:.2f} to {evaluation['artifact_score']:.2f}"
            in result.stderr)
    assert "lower prune.amount" in result.stderr


def test_moderate_pruning_passes_and_reports_sparsity_and_size(workspace):
    result = workspace.run("+recipe=digits", *QUICK, "target=onnxruntime_fp32", "optimize=[prune,simplify]",
                           "prune.amount=0.3")
    report = read_json(result.artifact / "report.json")
    prune, simplify = report["optimizations"]
    assert prune["step"] == "prune" and abs(prune["sparsity_prunable"] - 0.3) < 0.01
    assert simplify["step"] == "simplify" and simplify["nodes_after"] <= simplify["nodes_before"]
    assert report["tolerance_level"] == "pruned" and report["evaluation"]["drop"] <= 1.0
    assert 0 < report["size"]["compressed_bytes"] < report["size"]["model_bytes"]
    assert "sparsity_prunable" in (result.artifact / "report.md").read_text()


def test_dynamic_quantization_needs_no_calibration(workspace):
    result = workspace.run("+recipe=digits", *QUICK, "target=onnxruntime_int8", "ort_quantize.mode=dynamic")
    assert "calibration" not in result.ran()
    summary = read_json(result.artifact / "report.json")["optimizations"][0]
    assert summary["mode"] == "dynamic"


def test_fp16_step_on_onnxruntime(workspace):
    result = workspace.run("+recipe=digits", *QUICK, "target=onnxruntime_fp32", "optimize=[fp16]")
    report = read_json(result.artifact / "report.json")
    assert report["tolerance_level"] == "fp16" and report["passed"]
    key = read_json(result.artifact / "manifest.json")["steps"]["fp16"]["key"]
    # The converter appends its input casts after their readers; the step sorts the graph.
    onnx.checker.check_model(str(workspace.cache / "entries" / key[:2] / key / "out" / "model.onnx"))


def test_a_step_for_another_backend_names_the_targets_it_serves(workspace):
    result = workspace.run("+recipe=digits", "target=openvino_fp32", "optimize=[ort_quantize]", "mode=plan", check=False)
    assert result.code == 1
    assert "optimize: step 'ort_quantize' does not apply to target openvino_fp32 (openvino)" in result.stderr
    assert "'ort_quantize' serves onnxruntime targets" in result.stderr
    other = workspace.run("+recipe=digits", "optimize=[sharpen]", "mode=plan", check=False)
    assert "optimize: unknown optimization step 'sharpen'" in other.stderr and "nncf_quantize" in other.stderr


def test_int8_without_calibration_data_is_refused(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", "target=openvino_int8", "mode=plan", check=False)
    assert result.code == 1
    assert "calibration.source: nncf_quantize needs calibration data and the recipe declares none" in result.stderr
    assert "calibration.source=random opts in" in result.stderr


def test_random_calibration_is_flagged_in_the_report(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", *QUICK, "target=openvino_int8", "calibration.source=random",
                           "calibration.samples=16")
    report = read_json(result.artifact / "report.json")
    assert any("nncf_quantize was calibrated on RANDOM data" in warning for warning in report["warnings"])
    assert "WARNING: nncf_quantize was calibrated on RANDOM data" in result.stdout
    assert "> **WARNING: nncf_quantize was calibrated on RANDOM data" in (result.artifact / "report.md").read_text()


def test_calibration_from_an_image_folder_and_npz(workspace):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = workspace.root / "calib"
    folder.mkdir()
    for index in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    preprocess = {"resize": 20, "center_crop": 16, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    workspace.recipe("cnn", {**cnn_recipe(), "preprocess": preprocess, "calibration": {"source": "images", "path": "calib"}})
    images = workspace.run("+recipe=cnn", *QUICK, "target=onnxruntime_int8")
    summary = read_json(images.artifact / "report.json")["optimizations"][0]
    assert summary["calibration_samples"] == 6 and summary["calibration_source"] == "images"

    np.savez(workspace.root / "calib.npz", image=rng.standard_normal((5, 3, 16, 16)).astype(np.float32))
    workspace.recipe("cnn", {**cnn_recipe(), "calibration": {"source": "npz", "path": "calib.npz"}})
    arrays = workspace.run("+recipe=cnn", *QUICK, "target=onnxruntime_int8")
    assert "calibration" in arrays.ran() and "export" not in arrays.ran()
    assert read_json(arrays.artifact / "report.json")["optimizations"][0]["calibration_samples"] == 5


def test_calibration_data_of_the_wrong_shape(workspace):
    np.savez(workspace.root / "calib.npz", image=np.zeros((5, 3, 8, 8), np.float32))
    workspace.recipe("cnn", {**cnn_recipe(), "calibration": {"source": "npz", "path": "calib.npz"}})
    result = workspace.run("+recipe=cnn", *QUICK, "target=onnxruntime_int8", check=False)
    assert result.code == 1 and "calibration.path: calib.npz: input 'image' has samples of shape [3, 8, 8]; the model takes " \
        "[3, 16, 16]" in result.stderr and " running " not in result.stdout  # from the file's header, at plan time


def test_digits_training_is_deterministic_and_splits_do_not_overlap():
    import torch

    from builder.examples import digits

    indices = digits.split_indices(1797)
    assert sorted(np.concatenate(list(indices.values())).tolist()) == list(range(1797))
    assert [len(part) for part in indices.values()] == [1078, 179, 540]
    first, second = digits.train_cnn().state_dict(), digits.train_cnn().state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_a_sweep_over_precisions_by_override(workspace):
    result = workspace.run("-m", "+recipe=digits", *QUICK, "target=openvino_fp32", "target.precision=fp32,fp16",
                           "target.options.performance_hint=throughput", "target.options.streams=2")
    artifacts = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("artifact: ")]
    runtimes = [read_json(Path(a) / "manifest.json")["runtime"] for a in artifacts]
    assert [r["compute_precisions"] for r in runtimes] == [["fp32"], ["fp16", "fp32"]]
    assert all(r["performance_hint"] == "throughput" and r["streams"] == 2 for r in runtimes)
    assert _steps(result, "export") == ["running", "cached"]


def test_int8_precision_without_a_quantization_step_is_refused(workspace):
    result = workspace.run("+recipe=digits", "target=openvino_fp32", "target.precision=int8", "mode=plan", check=False)
    assert "target.optimize: target openvino_fp32 is int8 but runs no quantization step" in result.stderr


def test_a_pluggable_metric(workspace):
    result = workspace.run("+recipe=digits", *QUICK, "target=openvino_fp32", "evaluation.metric=tinynets.top2")
    evaluation = read_json(result.artifact / "report.json")["evaluation"]
    assert evaluation["metric"] == "tinynets.top2" and evaluation["source_score"] >= 98.5
    assert evaluation["artifact_score"] == evaluation["source_score"]
