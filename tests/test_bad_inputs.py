"""The bad-input table (issue 14): each bad value fails the build at plan time with one line naming the
key and the fix, exit 1, before any step runs, leaving nothing behind."""

from __future__ import annotations

import pytest

from conftest import QUICK, cnn_recipe

BAD = [
    ("serving.max_body_bytes=-1", "serving.max_body_bytes: -1 is not valid: bytes of a request body, at least 1"),
    ("serving.max_batch_size=-1", "serving.max_batch_size: -1 is not valid: rows per batch (1: no batching), at least 1"),
    ("serving.max_queue_delay_ms=-2", "serving.max_queue_delay_ms: -2.0 is not valid"),
    ("serving.top_k=-3", "serving.top_k: -3 is not valid: classes answered, at least 1"),
    ("serving.scores=bogus", "serving.scores: 'bogus' is not valid (fix: choose one of: softmax, raw)"),
    ("preprocess.layout=bogus", "preprocess.layout: 'bogus' is not valid (fix: choose one of: NCHW, NHWC)"),
    ("preprocess.color=CMYK", "preprocess.color: 'CMYK' is not valid (fix: choose one of: RGB, BGR, L)"),
    ("preprocess.std=[0,1,1]", "preprocess.std: std [0.0, 1.0, 1.0] divides by a value that is not positive"),
    ("preprocess.mean=[0.5,0.5]", "preprocess.mean: 2 values for 3 channels (RGB) (fix: give 1 value or 3)"),
    ("preprocess.resize=0", "preprocess.resize: 0 pixels is not a size"),
    ("preprocess.scale=0", "preprocess.scale: 0.0 is not valid: the factor applied to pixel values, more than 0"),
    ("hardware.intra_op_threads=-4", "hardware.intra_op_threads: -4 is not valid: threads (0: the runtime chooses), at least 0"),
    ("verify.latency.max_seconds=-1", "verify.latency.max_seconds: -1.0 is not valid: seconds, more than 0"),
    ("verify.latency.min_runs=500 verify.latency.max_runs=100",
     "verify.latency.min_runs: min_runs 500 exceeds max_runs 100"),
    ("verify.seed=-1", "verify.seed: -1 is not valid: a seed, at least 0"),
    ("model.dims.batch=-1", "model.dims.batch: -1 is not a size (fix: give a whole number of at least 1)"),
    ("model.dims.batch=0", "model.dims.batch: 0 is not a size"),
    ("verify.samples=100000000", "verify.samples: 100000000 verification samples at model.dims"),
    ("model.dims.batch=100000000", "model.dims.batch: 4 verification samples at model.dims"),
    ("+model.path=model.onnx", "model.path: a pytorch source built from model.factory does not read model.path (model.onnx)"),
    ("model.seed=-1", "model.seed: -1 is not valid: a seed, at least 0"),
    ("model.opset=99", "model.opset: opset 99 is newer than any exporter knows"),
    ("model.opset=3", "model.opset: 3 is not valid: an ONNX opset (7 is the oldest ONNX Runtime runs), at least 7"),
    ("hardware.intra_op_threads=100000", "hardware.intra_op_threads: 100000 threads is past any machine's"),
    ("serving.output=nosuch", "serving.output: 'nosuch' is not an output of the model (fix: choose from: logits)"),
    ("verify.tolerances.fp32.min_cosine=nan", "verify.tolerances.fp32.min_cosine: nan is not a limit"),
    ("verify.tolerances.fp32.min_cosine=2", "verify.tolerances.fp32.min_cosine: 2.0 is not a limit"),
    ("verify.tolerances.fp32.max_rel_l2=inf", "verify.tolerances.fp32.max_rel_l2: inf is not a limit"),
    ("verify.tolerances.fp32.max_rel_l2=-1", "verify.tolerances.fp32.max_rel_l2: -1.0 is not a limit"),
    ("+calibration.samples=-4", "calibration.samples: -4 samples is no data"),
    ("model.inputs.0.name=''", "model.inputs[0].name: an input has no name"),
    ("model.inputs.0.shape=[]", "model.inputs[0].shape: input 'image' has no dimensions: inputs are batched"),
    ("output.dir=''", "output.dir: the artifacts' directory is empty"),
    ("output.dir=/proc/forbidden", "output.dir: cannot write in /proc/forbidden"),
    ("lock.path=/proc/x/cnn.lock.json", "lock.path: cannot write in /proc/x"),
    ("lock.path=recipes", "lock.path: "),
    ("cache.dir=recipes/cnn.yaml/cache", "cache.dir: "),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[case[0] for case in BAD])
def test_a_bad_value_fails_at_plan_time_with_one_line_naming_its_key(workspace, overrides, message):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", *QUICK, *overrides.split(), check=False)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 1 and len(errors) == 1 and errors[0].startswith(f"error: {message}"), result.stderr
    assert "running" not in result.stdout
    assert not workspace.cache_entries() and not (workspace.root / "artifacts").exists()
    assert sorted(p.name for p in (workspace.root / "recipes").iterdir()) == ["cnn.yaml"]


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
