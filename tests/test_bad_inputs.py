"""The bad-input table (issue 14): each bad value fails the build at plan time with one line naming the
key and the fix, exit 1, before any step runs, leaving nothing behind (no cache entry, no artifact, no
run directory, no file in the working directory)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import QUICK, cnn_recipe

# A one-input ONNX model with the cnn recipe's input ([batch, 3, 16, 16] float32 -> logits).
_ONNX = "model.source=onnx model.factory=null model.kwargs={} +model.path=cnn.onnx"
_TWO_INPUTS = "model.inputs=[{name:image,shape:[batch,3,16,16]},{name:extra,shape:[batch,4]}]"
_EVALUATION = "+evaluation.source=npz +evaluation.path=good.npz"
_TRT = "target=tensorrt_fp16"

BAD = [
    ("target=pytorch model.inputs=[{name:image,shape:[batch,3,side,16]}] +model.dims.side=16",
     "model.inputs[0].shape: input 'image' has a dynamic dimension besides the batch (side) (fix: target=pytorch keeps"),
    ("target=auto select.targets=[nope]", "select.targets: no target named 'nope' (fix: choose from: mindspore, "),
    ("target=auto select.targets=[auto]", "select.targets: no target named 'auto'"),
    ("target=auto select.margin=-1", "select.margin: -1.0 is not a fraction >= 0"),
    ("target=auto select.targets=[mindspore]", "select.targets: no candidate target is usable on this host (mindspore: "),
    ("target=auto verify.source=nope", "verify.source: 'nope' is not valid"),
    ("target=auto target.precision=fp16", "target.precision: set with target=auto, whose candidates each have their own"),
    # Numbers out of range
    ("serving.max_body_bytes=-1", "serving.max_body_bytes: -1 is not valid: bytes of a request body, at least 1"),
    ("serving.max_batch_size=-1", "serving.max_batch_size: -1 is not valid: rows per batch (1: no batching), at least 1"),
    ("serving.max_queue_delay_ms=-2", "serving.max_queue_delay_ms: -2.0 is not valid"),
    ("serving.max_queue_delay_ms=nan", "serving.max_queue_delay_ms: nan is not valid"),
    ("serving.top_k=-3", "serving.top_k: -3 is not valid: classes answered, at least 1"),
    ("target=openvino_fp32 serving.torchserve=true", "serving.torchserve: openvino artifacts have no TorchServe archive"),
    ("serving.drift_threshold=0", "serving.drift_threshold: 0.0 is not valid: a population stability index, more than 0"),
    ("serving.drift_min_rows=2000", "serving.drift_min_rows: drift_min_rows 2000 exceeds drift_window 1000: the drift "
                                    "alerts could never fire"),
    ("preprocess.std=[0,1,1]", "preprocess.std: std [0.0, 1.0, 1.0] divides by a value that is not positive"),
    ("preprocess.mean=[0.5,0.5]", "preprocess.mean: 2 values for 3 channels (RGB) (fix: give 1 value or 3)"),
    ("preprocess.resize=0", "preprocess.resize: 0 pixels is not a size"),
    ("preprocess.scale=0", "preprocess.scale: 0.0 is not valid: the factor applied to pixel values, more than 0"),
    ("hardware.intra_op_threads=-4", "hardware.intra_op_threads: -4 is not valid: threads (0: the runtime chooses), at least 0"),
    ("hardware.inter_op_threads=-1", "hardware.inter_op_threads: -1 is not valid"),
    ("hardware.intra_op_threads=100000", "hardware.intra_op_threads: 100000 threads is past any machine's"),
    ("verify.latency.max_seconds=-1", "verify.latency.max_seconds: -1.0 is not valid: seconds, more than 0"),
    ("verify.latency.stable_within=0", "verify.latency.stable_within: 0.0 is not valid: a fraction, more than 0"),
    ("verify.latency.warmup_runs=-1", "verify.latency.warmup_runs: -1 is not valid: runs, at least 0"),
    ("verify.latency.min_runs=500 verify.latency.max_runs=100",
     "verify.latency.min_runs: min_runs 500 exceeds max_runs 100"),
    ("verify.seed=-1", "verify.seed: -1 is not valid: a seed, at least 0"),
    ("model.seed=-1", "model.seed: -1 is not valid: a seed, at least 0"),
    ("model.opset=99", "model.opset: opset 99 is newer than any exporter knows"),
    ("model.opset=3", "model.opset: 3 is not valid: an ONNX opset (7 is the oldest ONNX Runtime runs), at least 7"),
    ("verify.samples=0", "verify.samples: 0 samples verify nothing"),
    ("verify.samples=100000000", "verify.samples: 100000000 verification samples at model.dims"),
    ("+calibration.samples=-4", "calibration.samples: -4 samples is no data"),
    (f"{_EVALUATION} evaluation.samples=0", "evaluation.samples: 0 samples is no data"),
    ("evaluation.max_drop=-1", "evaluation.max_drop: -1.0 is not valid: points of the metric the artifact may lose"),
    ("verify.tolerances.fp32.min_cosine=nan", "verify.tolerances.fp32.min_cosine: nan is not a limit"),
    ("verify.tolerances.fp32.min_cosine=2", "verify.tolerances.fp32.min_cosine: 2.0 is not a limit"),
    ("verify.tolerances.fp32.max_rel_l2=inf", "verify.tolerances.fp32.max_rel_l2: inf is not a limit"),
    ("verify.tolerances.fp32.max_rel_l2=-1", "verify.tolerances.fp32.max_rel_l2: -1.0 is not a limit"),
    ("optimize=[prune] prune.amount=1.5", "prune.amount: pruning amount 1.5 is not a fraction"),
    (f"{_TRT} target.options.workspace_mb=-1", "target.options.workspace_mb: -1 is not a size"),
    (f"{_TRT} target.options.optimization_level=9", "target.options.optimization_level: 9 is not a builder optimization level"),
    (f"{_TRT} trt_fp16.max_abs=-1", "trt_fp16.max_abs: -1.0 is not a magnitude float16 can hold"),
    # Values of the wrong type
    ("serving.max_batch_size=abc", "serving.max_batch_size: Value 'abc' of type 'str' could not be converted to Integer "
     "(fix: give a whole number)"),
    ("serving.max_batch_size=1.5", "serving.max_batch_size: Value '1.5' of type 'float' could not be converted to Integer"),
    ("verify.latency.max_seconds=fast", "verify.latency.max_seconds: Value 'fast' of type 'str' could not be converted to "
     "Float (fix: give a number)"),
    ("model.dims.batch=abc", "model.dims.batch: Value 'abc' of type 'str' could not be converted to Integer"),
    ("model.inputs.0.pad=abc", "model.inputs[0].pad: Value 'abc' of type 'str' could not be converted to Integer"),
    ("cache.enabled=2", "cache.enabled: 2 is not true or false (fix: give true or false)"),
    ("cache={enabled:2}", "cache.enabled: 2 is not true or false"),
    ("+recipe=bool_in_recipe", "cache.enabled: 2 is not true or false"),
    ("serving.allow_nonfinite=2", "serving.allow_nonfinite: 2 is not true or false"),
    ("lock.update=maybe", "lock.update: Value 'maybe' is not a valid bool (type str) (fix: give true or false)"),
    ("traceback=3", "traceback: 3 is not true or false"),
    ("preprocess.mean=abc", "preprocess.mean: Invalid value assigned: str is not a ListConfig, list or tuple. "
     "(fix: give a list, e.g. [a, b])"),
    ("model.inputs.0.shape=abc", "model.inputs[0].shape: Invalid value assigned: str is not a ListConfig"),
    ("model.kwargs=abc", "model.kwargs: Cannot assign str to Dict[str, Any] (fix: give a mapping, e.g. {name: value})"),
    ("model.dims=[1]", "model.dims: Cannot merge DictConfig with ListConfig (fix: give a mapping"),
    ("model.inputs=[{name:image}]", "model.inputs[0].shape: Missing mandatory value: shape (fix: set it"),
    ("output.dir=null", "output.dir: field 'output.dir' is not Optional (fix: give a value"),
    ("evaluation=abc", "evaluation: Invalid type assigned: str is not a subclass of EvaluationConfig"),
    ("verify.seed=${nosuch}", "verify.seed: Interpolation key 'nosuch' not found (fix: "),
    # Not one of the choices
    ("mode=nosuch", "mode: 'nosuch' is not valid (fix: choose one of: build, plan, check)"),
    ("model.source=nosuch", "model.source: unknown source 'nosuch'"),
    ("model.exporter=nosuch", "model.exporter: 'nosuch' is not valid (fix: choose one of: torchscript, dynamo)"),
    ("model.inputs.0.dtype=float128", "model.inputs[0].dtype: 'float128' is not valid"),
    ("model.inputs.0.role=bogus", "model.inputs[0].role: 'bogus' is not valid (fix: choose one of: auto, mask, ids, values)"),
    ("serving.scores=bogus", "serving.scores: 'bogus' is not valid (fix: choose one of: softmax, raw)"),
    ("preprocess.layout=bogus", "preprocess.layout: 'bogus' is not valid (fix: choose one of: NCHW, NHWC)"),
    ("preprocess.color=CMYK", "preprocess.color: 'CMYK' is not valid (fix: choose one of: RGB, BGR, L)"),
    ("verify.source=bogus", "verify.source: 'bogus' is not valid (fix: choose one of: auto, npz, images, factory, random)"),
    ("+calibration.source=bogus", "calibration.source: 'bogus' is not valid (fix: choose one of: npz, images, factory, random)"),
    ("+evaluation.source=random", "evaluation.source: 'random' is not valid (fix: choose one of: npz, images, factory)"),
    ("target=nosuch", "target: no option 'nosuch' (fix: choose one of: auto, mindspore, onnxruntime_fp32"),
    ("verify=nosuch", "verify: no option 'nosuch' (fix: choose one of: default, quick)"),
    ("hardware=nosuch", "hardware: no option 'nosuch' (fix: choose one of: default)"),
    ("target.precision=fp8", "target.precision: onnxruntime does not build precision 'fp8' (fix: choose one of: fp32, int8)"),
    ("optimize=[nosuch]", "optimize: unknown optimization step 'nosuch'"),
    ("target.optimize=[nosuch]", "target.optimize: unknown optimization step 'nosuch'"),
    ("target.options.graph_optimization=bogus", "target.options.graph_optimization: graph optimization level 'bogus'"),
    ("target=onnxruntime_int8 +calibration.source=random +calibration.samples=4 ort_quantize.weight_type=bogus",
     "ort_quantize.weight_type: 'bogus' is not valid (fix: choose one of: uint8, int8)"),
    ("target=openvino_int8 +calibration.source=random +calibration.samples=4 nncf_quantize.model_type=bogus",
     "nncf_quantize.model_type: 'bogus' is not valid"),
    (f"{_TRT} target.options.flavor=bogus", "target.options.flavor: 'bogus' is not a TensorRT flavor"),
    ("serving.output=nosuch", "serving.output: 'nosuch' is not an output of the model (fix: choose from: logits)"),
    ("evaluation.output=nosuch", "evaluation.output: 'nosuch' is not an output of the model"),
    ("verify.class_scores=[nosuch]", "verify.class_scores: 'nosuch' is not an output of the model"),
    ("verify.allow_uninformative=[nosuch]", "verify.allow_uninformative: 'nosuch' is not an input or output of the model"),
    # Keys that do not exist
    ("+model.bogus=1", "model.bogus: no such key (fix: valid keys of model: source, factory"),
    ("serving.bogus=1", "serving.bogus: no such key (fix: valid keys of serving: max_batch_size"),
    ("target.options.bogus=1", "target.options.bogus: no such key (fix: valid keys of target.options: graph_optimization)"),
    ("+target.options.bogus=1", "target.options.bogus: no such key (fix: valid keys of target.options for onnxruntime"),
    ("model.kwargs.bogus=1", "model.kwargs.bogus: not in the config yet (fix: add it with +model.kwargs.bogus=1)"),
    ("verify.tolerances.fp32.bogus=1", "verify.tolerances.fp32.bogus: no such key (fix: valid keys of verify.tolerances.fp32: "
     "max_rel_l2"),
    ("+verify.tolerances.fp32.bogus=1", "verify.tolerances.fp32.bogus: no such limit (fix: valid limits: max_rel_l2"),
    ("+verify.tolerances.fp99.min_cosine=0.9", "verify.tolerances.fp99: Invalid type assigned: dict is not a subclass of "
     "Tolerance"),
    ("+prune.amount=0.3", "prune.amount: already in the config (fix: set it without the +, as prune.amount=VALUE)"),
    # Shapes and dimensions
    ("model.dims.batch=-1", "model.dims.batch: -1 is not a size (fix: give a whole number of at least 1)"),
    ("model.dims.batch=0", "model.dims.batch: 0 is not a size"),
    ("model.dims.batch=100000000", "model.dims.batch: 4 verification samples at model.dims"),
    ("model.inputs.0.shape=[batch,seq]", "model.dims.seq: dynamic dimension 'seq' of input 'image' has no size"),
    ("model.inputs.0.shape=[batch,3,0,16]", "model.inputs[0].shape: dimension 0 must be a positive size or a name (fix: "),
    ("model.inputs.0.shape=[batch,3,16.5,16]", "model.inputs[0].shape: dimension 16.5 must be a positive size or a name"),
    ("model.inputs.0.shape=[]", "model.inputs[0].shape: input 'image' has no dimensions: inputs are batched"),
    ("model.inputs.0.name=''", "model.inputs[0].name: an input has no name"),
    ("model.inputs=[]", "model.inputs: the model has no inputs"),
    ("model.outputs=[]", "model.outputs: the model has no outputs (fix: name each output)"),
    ("model.outputs=[logits,logits]", "model.outputs: output names repeat: ['logits', 'logits']"),
    ("model.inputs.0.name='se\"q'", "model.inputs[0].name: 'se\"q' cannot name a tensor in the artifact's configs"),
    ("model.inputs.0.low=5 model.inputs.0.high=1", "model.inputs[0].high: the range [5, 1) is empty"),
    ("model.inputs=[{name:image,shape:[batch,3,16,16]},{name:extra,shape:[2,4]}]",
     "model.inputs: input 'image' starts with 'batch' and input 'extra' with 2: the first dimension of every input is the batch"),
    ("model.inputs=[{name:image,shape:[batch,3,16,16]},{name:image,shape:[batch,4]}]", "model.inputs: input names repeat"),
    ("+verify.sizes.batch=[0]", "verify.sizes.batch: [0] is not a list of positive sizes"),
    ("+verify.sizes.nosuch=[1]", "verify.sizes.nosuch: 'nosuch' is not a dynamic dimension of model.inputs"),
    ("model.inputs.0.shape=[batch,16,16] serving.labels=labels.txt",
     "model.inputs[0].shape: an image input is [batch, C, H, W] (serving.labels, preprocess.layout=NCHW)"),
    ("preprocess.color=L serving.labels=labels.txt", "preprocess.color: preprocess.color=L gives 1 channel"),
    ("preprocess.layout=NHWC verify.source=images verify.path=images",
     "preprocess.layout: preprocess.color=RGB gives 3 channels; input 'image' ['batch', 3, 16, 16] has 16 at the C of "
     "preprocess.layout=NHWC (fix: set preprocess.layout=NCHW)"),
    ("model.inputs.0.shape=[batch,4,16,16] verify.source=images verify.path=images",
     "preprocess.color: preprocess.color=RGB gives 3 channels; input 'image' ['batch', 4, 16, 16] has 4"),
    (f"{_TWO_INPUTS} serving.labels=labels.txt", "serving.labels: images feed a one-input model; this one has 2 inputs"),
    # Data sets
    ("verify.source=npz", "verify.path: a npz data set needs a path"),
    ("verify.source=npz verify.path=nonexist.npz", "verify.path: file not found: "),
    ("verify.source=npz verify.path=notnpz.npz", "verify.path: "),
    ("verify.source=npz verify.path=labels.txt", "verify.path: "),
    ("verify.source=npz verify.path=images", "verify.path: cannot read "),
    ("verify.source=npz verify.path=wrongkeys.npz", "verify.path: wrongkeys.npz has arrays ['foo']; expected ['image']"),
    ("verify.source=npz verify.path=objects.npz", "verify.path: objects.npz: input 'image' holds object values"),
    ("verify.source=npz verify.path=empty.npz", "verify.path: the verify data set empty.npz is empty"),
    ("verify.source=npz verify.path=small.npz", "verify.path: small.npz: input 'image' has samples of shape [3, 8, 8]; the "
     "model takes [3, 16, 16]"),
    ("verify.source=npz verify.path=good.npz model.inputs.0.dtype=int64",
     "verify.path: good.npz: input 'image' holds float32 values; the input is int64"),
    ("+evaluation.source=npz +evaluation.path=fewlabels.npz", "evaluation.path: fewlabels.npz: labels of shape [3] for 4 samples"),
    ("+evaluation.source=npz +evaluation.path=nolabels.npz", "evaluation.path: nolabels.npz has no labels"),
    (f"verify.source=npz verify.path=good.npz {_TWO_INPUTS.replace('extra', 'image2')}", "verify.path: good.npz has arrays"),
    ("verify.source=npz verify.path=one.npy model.inputs=[{name:a,shape:[batch,4]},{name:b,shape:[batch,4]}]",
     "verify.path: a .npy file holds one input, the model has several"),
    ("verify.source=images verify.path=empty", "verify.path: no .png/.jpg/.jpeg/.bmp files under "),
    ("verify.source=factory", "verify.factory: a factory data set needs an import path"),
    ("verify.source=factory verify.factory=tinynets.nosuch", "verify.factory: cannot import 'tinynets.nosuch'"),
    ("target=onnxruntime_int8", "calibration.source: ort_quantize needs calibration data and the recipe declares none"),
    ("target=onnxruntime_int8 +calibration.source=random", "calibration.samples: random calibration data needs a sample count"),
    (f"{_EVALUATION} evaluation.metric=nosuch.mod.fn", "evaluation.metric: cannot find the module of 'nosuch.mod.fn'"),
    # Models and factories
    ("model.factory=nosuch", "model.factory: cannot find the module of 'nosuch'"),
    ("model.factory=tinynets.nosuch", "model.factory: cannot import 'tinynets.nosuch': tinynets.py defines no 'nosuch'"),
    ("model.factory=null", "model.factory: a pytorch source needs a factory"),
    ("model.factory=broken.build", "model.factory: cannot parse "),
    ("+model.path=model.onnx", "model.path: a pytorch source built from model.factory does not read model.path (model.onnx)"),
    ("model.weights=nonexist.pt", "model.weights: file not found: "),
    ("model.source=onnx model.factory=null", "model.path: model.source=onnx reads a model file and none is given"),
    ("model.source=torchscript model.factory=null", "model.path: model.source=torchscript reads a model file"),
    (f"{_ONNX.replace('cnn.onnx', 'nonexist.onnx')}", "model.path: file not found: "),
    (f"{_ONNX} +model.weights=labels.txt", "model.weights: model.source=onnx reads its weights from model.path"),
    # Files and directories
    ("output.dir=''", "output.dir: the artifacts' directory is empty"),
    ("output.dir=/proc/forbidden", "output.dir: cannot write in /proc/forbidden"),
    ("output.dir=labels.txt", "output.dir: "),
    ("lock.path=/proc/x/cnn.lock.json", "lock.path: cannot write in /proc/x"),
    ("lock.path=recipes", "lock.path: "),
    ("cache.dir=recipes/cnn.yaml/cache", "cache.dir: "),
    ("cache.dir=/proc/x", "cache.dir: cannot write in /proc/x"),
    ("serving.labels=nonexist.txt", "serving.labels: file not found: "),
    ("serving.labels=images", "serving.labels: cannot read "),
    ("serving.labels=one.npy", "serving.labels: cannot read "),
    ("serving.labels=empty.txt", "serving.labels: "),
    # Recipes
    ("+recipe=nosuch", "recipe: no recipe named 'nosuch'"),
    ("+recipe=", "recipe: no recipe named ''"),
    ("+recipe=target_by_value", "target: Merge error: str is not a subclass of TargetConfig"),
    ("+recipe=a_list", "recipes/a_list.yaml: cannot parse recipe: a recipe is a mapping of config keys"),
    ("+recipe=unparsable", "recipes/unparsable.yaml: cannot parse recipe at line 4, column 1: expected ',' or ']', but got '<stream end>' "
     "(while parsing a flow sequence started at line 3, column 11) (fix: correct the YAML there)"),
    ("+recipe=misspelt", "modle: no such key (fix: valid keys of the config: mode, traceback, model"),
]

# Known only by reading the model (planning imports no model code): the first step fails, keeping nothing.
AT_EXPORT = [
    ("model.inputs.0.shape=[batch,2,16,16]", "model.inputs: the model rejects inputs as declared (image "
     "[2, 2, 16, 16] float32): RuntimeError: "),
    ("model.factory=os.path", "model.factory: 'os.path' is not callable (fix: name a function or class)"),
    (f"{_ONNX.replace('cnn.onnx', 'labels.txt')}", "model.path: not a valid ONNX model: "),
    (f"{_ONNX} model.inputs.0.dtype=float16", "model.inputs[0].dtype: input 'image' is float32 in the model, not float16"),
    (f"{_ONNX} model.inputs.0.shape=[batch,3,32,32]", "model.inputs[0].shape: input 'image' has size 16 at axis 2 in the model"),
    (f"{_ONNX} model.inputs.0.name=x", "model.inputs: the recipe declares inputs ['x'] but the model has ['image']"),
    (f"{_ONNX} model.outputs=[y]", "model.outputs: the recipe declares outputs ['y'] but the model has ['logits']"),
]

_RECIPES = {
    "a_list": "- model\n- target\n",
    "unparsable": "# @package _global_\nmodel:\n  source: [pytorch\n",
    "misspelt": "# @package _global_\nmodle:\n  source: pytorch\n",
    "bool_in_recipe": "# @package _global_\ncache:\n  enabled: 2\n",
    "target_by_value": "# @package _global_\ntarget: onnxruntime_fp32\n",
}


def _files(root) -> None:
    """What the table's values point at: data files good and bad, an image folder, a module that does not
    parse, labels, a small ONNX model."""
    images = np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32)
    np.savez(root / "good.npz", image=images, labels=np.arange(4) % 5)
    np.savez(root / "objects.npz", image=np.array([object()] * 4, dtype=object))
    np.savez(root / "empty.npz", image=np.zeros((0, 3, 16, 16), np.float32))
    np.savez(root / "small.npz", image=images[:, :, :8, :8])
    np.savez(root / "fewlabels.npz", image=images, labels=np.arange(3))
    np.savez(root / "nolabels.npz", image=images)
    np.savez(root / "wrongkeys.npz", foo=np.zeros((4, 3, 16, 16), np.float32))
    np.save(root / "one.npy", np.zeros((4, 4), np.float32))
    (root / "notnpz.npz").write_text("not a zip archive\n")
    (root / "empty").mkdir()
    (root / "images").mkdir()
    from PIL import Image

    Image.new("RGB", (16, 16), (10, 20, 30)).save(root / "images" / "one.png")
    (root / "broken.py").write_text("def build(:\n    pass\n")
    (root / "labels.txt").write_text("\n".join(f"class{i}" for i in range(5)) + "\n")
    (root / "empty.txt").write_text("\n")
    _onnx_cnn(root / "cnn.onnx")
    for name, text in _RECIPES.items():
        (root / "recipes" / f"{name}.yaml").write_text(text)


def _onnx_cnn(path) -> None:
    """[batch, 3, 16, 16] float32 -> logits [batch, 5], written with onnx.helper (no exporter)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((5, 3), np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "weight"], ["logits"], transB=1)],
        "cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[case[0] for case in BAD])
def test_a_bad_value_fails_at_plan_time_with_one_line_naming_its_key(workspace, overrides, message):
    result = _build_with(workspace, overrides, message)
    assert "running" not in result.stdout


@pytest.mark.parametrize(("overrides", "message"), AT_EXPORT, ids=[case[0] for case in AT_EXPORT])
def test_a_model_that_does_not_match_the_recipe_fails_in_its_first_step(workspace, overrides, message):
    result = _build_with(workspace, overrides, message)
    assert [line.split()[1] for line in result.stdout.splitlines() if " running " in line] == ["export"]


def _build_with(workspace, overrides: str, message: str):
    """Builds the cnn recipe with the overrides: exit 1, one line (the key first, or a recipe file's path for
    a recipe that does not parse; then what is wrong; then the fix), and nothing left behind."""
    workspace.recipe("cnn", cnn_recipe())
    _files(workspace.root)
    before = sorted(p.relative_to(workspace.root) for p in workspace.root.rglob("*"))
    recipe = [] if overrides.startswith("+recipe=") else ["+recipe=cnn"]
    result = workspace.run(*recipe, *QUICK, *overrides.split(), check=False)
    errors = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert result.code == 1 and len(errors) == 1, result.stderr
    where = errors[0].startswith(f"error: {message}") or (recipe == [] and message in errors[0])
    assert where and "(fix: " in errors[0], result.stderr
    assert not workspace.cache_entries()
    assert sorted(p.relative_to(workspace.root) for p in workspace.root.rglob("*")) == before
    return result


@pytest.mark.parametrize(("factory", "message"), [
    ("mine.fortytwo", "model.factory: the factory mine.fortytwo returned int, not a torch.nn.Module"),
    ("mine.raises", "model.factory: the factory mine.raises raised ValueError: no weights here"),
    ("mine.typo_inside", "model.factory: the factory mine.typo_inside raised TypeError: "),
])
def test_a_factory_that_fails_is_named_with_what_it_did(workspace, factory, message):
    """A factory's own TypeError is not blamed on model.kwargs; what it raised and returned is named."""
    (workspace.root / "mine.py").write_text(
        "def fortytwo():\n    return 42\n"
        "def raises():\n    raise ValueError('no weights here')\n"
        "def typo_inside():\n    return len(3)\n")
    workspace.recipe("mine", cnn_recipe(factory=factory, kwargs={}))
    result = workspace.run("+recipe=mine", *QUICK, check=False)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 1 and errors[-1].startswith(f"error: {message}"), result.stderr
    assert not workspace.cache_entries() and not (workspace.root / "artifacts").exists()


def test_token_ids_past_the_vocabulary_name_the_inputs_and_their_range(workspace):
    """The model's own IndexError (an id past its embedding) comes with the values it was given, before
    any exporter runs."""
    workspace.recipe("encoder", {"model": {
        "source": "pytorch", "factory": "tinynets.tiny_encoder", "outputs": ["hidden"], "dims": {"batch": 2, "seq": 8},
        "inputs": [{"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64", "high": 1000},
                   {"name": "attention_mask", "shape": ["batch", "seq"], "dtype": "int64", "role": "mask"}]}})
    result = workspace.run("+recipe=encoder", *QUICK, check=False)
    last = result.stderr.strip().splitlines()[-1]
    assert result.code == 1 and last.startswith("error: model.inputs: the model rejects inputs as declared ("), last
    assert "input_ids [2, 8] int64 values " in last and "IndexError: index out of range" in last, last
    largest = int(last.split("input_ids [2, 8] int64 values ")[1].split("..")[1].split(",")[0])
    assert 100 <= largest < 1000, last  # past the vocabulary of 100, within the declared high
    assert "low/high (token ids below the vocabulary size)" in last
