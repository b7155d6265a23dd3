"""TensorRT targets on a CPU-only host: real TensorRT-RTX engines, the prepared graph verified with ONNX
Runtime CPU, the deferred full TensorRT build, the checks left pending on the GPU, and the errors."""

import os
import subprocess
import sys

import onnx
import pytest
from onnx import numpy_helper

from conftest import QUICK, cnn_recipe, hiding, onnx_recipe, read_json, triton_config
from test_errors import assert_nothing_left

pytestmark = [pytest.mark.torch, pytest.mark.tensorrt]
NO_GPU = "not measured: no GPU"


def serve(artifact, *args):
    return subprocess.run([sys.executable, "serve.py", *args], cwd=artifact, capture_output=True, text=True, timeout=120)


def model_dir(artifact):
    return artifact / "model_repository" / "cnn" / "1"


@pytest.fixture(scope="module")
def fp16(tmp_path_factory):
    from conftest import Workspace

    root = tmp_path_factory.mktemp("tensorrt")
    workspace = Workspace(root / "work", root / "cache")
    workspace.recipe("cnn", cnn_recipe())
    return workspace, workspace.run("+recipe=cnn", "target=tensorrt_fp16", "serving.max_batch_size=4", *QUICK)


def test_fp16_builds_a_real_rtx_engine_and_leaves_the_gpu_checks_pending(fp16):
    workspace, result = fp16
    artifact = result.artifact
    engine = model_dir(artifact) / "model.rtx.engine"
    assert engine.read_bytes()[:4] == b"vtrt"  # a serialized TensorRT-RTX engine
    graph = onnx.load(str(model_dir(artifact) / "model.onnx"))  # the graph the engine computes
    assert {t.data_type for t in graph.graph.initializer if t.dims} == {onnx.TensorProto.FLOAT16}
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    onnx.checker.check_model(graph)

    runtime = read_json(artifact / "manifest.json")["runtime"]
    assert [e["compute_capabilities"] for e in runtime["engines"]] == [["8.0", "8.6", "8.9", "12.0"]]
    assert runtime["deferred"]["install"] == "tensorrt-cu12"
    # The profile: the batch from 1 to serving.max_batch_size, optimal at model.dims.batch.
    assert runtime["builder"]["shapes"] == {"image": [[1, 3, 16, 16], [2, 3, 16, 16], [4, 3, 16, 16]]}

    report = read_json(artifact / "report.json")
    assert report["passed"] and report["tolerance_level"] == "fp16"
    assert report["proxy"]["why"].startswith("no NVIDIA GPU here") and report["latency"] == {"measured": False, "why": NO_GPU}
    assert len(report["pending"]) == 3 and "--build-engine" in report["pending"][0]
    assert "model.rtx.engine (TensorRT-RTX 1.7.1.116) runs on NVIDIA GPUs of compute capability 8.0, 8.6" in result.stdout
    assert "pending on the target: latency on the target GPU" in result.stdout and NO_GPU in result.stdout
    readme = (artifact / "README.md").read_text()
    assert "GeForce RTX 40" in readme and "python serve.py --build-engine" in readme
    assert "latency on the target GPU" in (artifact / "report.md").read_text()

    # Triton cannot load RTX engines: its ONNX Runtime backend with the TensorRT accelerator at fp16.
    config = triton_config(artifact / "model_repository" / "cnn" / "config.pbtxt")
    assert config.backend == "onnxruntime" and config.default_model_filename == "model.onnx"
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    requirements = (artifact / "requirements.txt").read_text().splitlines()
    assert "tensorrt-rtx-cu12-bindings==1.7.1.116" in requirements and "cuda-bindings>=12.8,<13" in requirements

    # No GPU here: the server refuses to start, the self-test and the deferred build say why.
    for args, said in (([], "refusing to start: the model does not load on this host"), (["--selftest"], "refusing"),
                       (["--build-engine"], "cannot build the engine here")):
        proc = serve(artifact, "--port", "0", *args)
        assert proc.returncode == 2 and proc.stderr.startswith(said) and ": no NVIDIA GPU here" in proc.stderr

    assert workspace.run("+recipe=cnn", "target=tensorrt_fp16", "serving.max_batch_size=4", *QUICK).ran() == []


def test_the_engine_follows_its_builder_settings(fp16):
    """Compute capabilities and profiles are in the engine: other values build other bytes."""
    workspace, first = fp16
    engine = (model_dir(first.artifact) / "model.rtx.engine").read_bytes()
    other = workspace.run("+recipe=cnn", "target=tensorrt_fp16", "serving.max_batch_size=4", *QUICK,
                          "target.options.compute_capabilities=[8.6]", "+target.options.profiles.batch=[1,2,8]")
    assert other.ran() == ["compile", "verify", "package"]
    runtime = read_json(other.artifact / "manifest.json")["runtime"]
    assert runtime["engines"][0]["compute_capabilities"] == ["8.6"] and runtime["max_batch_size"] == 8
    assert (model_dir(other.artifact) / "model.rtx.engine").read_bytes() != engine


@pytest.mark.parametrize(("flavor", "engines", "deferred"), [("rtx", ["model.rtx.engine"], False),
                                                              ("tensorrt", [], True)])
def test_flavors(fp16, flavor, engines, deferred):
    workspace, _ = fp16
    result = workspace.run("+recipe=cnn", "target=tensorrt_fp32", *QUICK, f"target.options.flavor={flavor}")
    assert sorted(p.name for p in model_dir(result.artifact).glob("*.engine")) == engines
    report = read_json(result.artifact / "report.json")
    assert report["passed"] and bool(report["deferred"]) == deferred
    assert any("--build-engine" in check for check in report["pending"]) == deferred
    assert read_json(result.artifact / "manifest.json")["runtime"]["builder"]["fp32"]  # TF32 off


def test_auto_without_tensorrt_rtx_defers_the_build(workspace, tmp_path):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", "target=tensorrt_fp32", *QUICK,
                           env=hiding(tmp_path / "hide", "tensorrt_rtx", "tensorrt_rtx_bindings"))
    assert not list(model_dir(result.artifact).glob("*.engine"))
    assert "engine: deferred full TensorRT build" in result.stdout


def test_int8_is_explicit_qdq_in_tensorrt_form_and_keeps_digits_accuracy(workspace):
    result = workspace.run("+recipe=digits", "target=tensorrt_int8", *QUICK)
    report = read_json(result.artifact / "report.json")
    assert report["passed"] and report["evaluation"]["drop"] <= report["evaluation"]["max_drop"]
    directory = result.artifact / "model_repository" / "digits" / "1"
    assert (directory / "model.rtx.engine").read_bytes()[:4] == b"vtrt"
    graph = onnx.load(str(directory / "model.onnx")).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and all(weights[n.input[2]].dtype.name == "int8" and not weights[n.input[2]].any()
                            for n in quantize)  # symmetric int8: zero points 0
    dequantized = [weights[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    assert any(w.dtype.name == "int8" and weights is not None for w in dequantized)  # int8 weights
    assert not any(w.dtype.name == "int32" for w in dequantized)  # biases stay float (TensorRT refuses int32 DQ)
    per_channel = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
                   and weights[n.input[1]].size > 1]
    assert per_channel  # per-channel weight scales


@pytest.mark.parametrize(("override", "where", "message"), [
    ("target.options.flavor=fast", "target.options.flavor", "'fast' is not a TensorRT flavor"),
    ("target.options.compute_capabilities=[9.0]", "target.options.compute_capabilities", "H100/H200"),
    ("target.options.optimization_level=7", "target.options.optimization_level", "from 0 (fastest build) to 5"),
    ("trt_fp16.max_abs=-1", "trt_fp16.max_abs", "not a magnitude float16 can hold"),
    ("+target.options.profiles.batch=[1,1,1]", "target.options.profiles.batch",
     "does not cover model.dims.batch=2"),
    ("+target.options.profiles.seq=[1,8,16]", "target.options.profiles.seq", "'seq' is not a dynamic dimension"),
    ("+target.options.profiles.batch=[4,2,8]", "target.options.profiles.batch", "1 <= min <= opt <= max"),
])
def test_bad_options_get_one_line_before_any_step(workspace, override, where, message):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", "target=tensorrt_fp16", override, check=False)
    assert result.code == 1 and result.stdout == ""
    line, = result.stderr.strip().splitlines()
    assert f"{where}: " in line and message in line
    assert_nothing_left(workspace)


def test_a_profile_must_cover_the_servers_batches(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", "target=tensorrt_fp16", "serving.max_batch_size=16",
                           "+target.options.profiles.batch=[1,2,8]", check=False)
    assert result.code == 1 and "target.options.profiles.batch: the profile [1, 2, 8] does not cover " \
                                "serving.max_batch_size=16" in result.stderr


def test_an_op_tensorrt_cannot_parse_is_named(workspace, tmp_path, two_heads_onnx):
    """An ONNX Runtime-optimized graph holds com.microsoft FusedConv nodes, which TensorRT cannot parse."""
    import onnxruntime

    fused = tmp_path / "fused.onnx"
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(fused)
    onnxruntime.InferenceSession(str(two_heads_onnx), options, providers=["CPUExecutionProvider"])
    node = next(n for n in onnx.load(str(fused)).graph.node if n.domain == "com.microsoft")
    workspace.recipe("fused", onnx_recipe(fused))
    result = workspace.run("+recipe=fused", "target=tensorrt_fp32", *QUICK, check=False)
    assert result.code == 1
    assert f"target.backend: TensorRT-RTX cannot parse node '{node.name}' (op {node.op_type})" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workspace.root / "artifacts").exists()


def test_fp16_keeps_nodes_whose_activations_overflow_float16_in_fp32(workspace):
    workspace.recipe("mlp", cnn_recipe(factory="tinynets.overflowing", kwargs={},
                                       inputs=[{"name": "x", "shape": ["batch", 4], "dtype": "float32"}]))
    result = workspace.run("+recipe=mlp", "target=tensorrt_fp16", *QUICK)
    report = read_json(result.artifact / "report.json")
    summary, = report["optimizations"]
    # The first Gemm and its Relu write the large tensors, the second Gemm reads one: fp32; the rest fp16.
    assert summary["kept_fp32_by_range"] == 3 and summary["largest_activation"] > 65504
    graph = onnx.load(str(result.artifact / "model_repository" / "mlp" / "1" / "model.onnx")).graph
    weights = {t.name: t.data_type for t in graph.initializer}
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    assert [weights[n.input[1]] for n in gemms] == [onnx.TensorProto.FLOAT] * 2 + [onnx.TensorProto.FLOAT16]
    assert report["passed"]


def test_the_fp16_graph_tidy_keeps_what_if_bodies_read():
    """A tensor kept fp32 and read inside an If body: its cast stays, and the graph stays valid and exact."""
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from backends.onnx_graph import tidy_fp16_graph

    body = lambda op: helper.make_graph([helper.make_node(op, ["t"], [f"{op}_out"])], op, [],  # noqa: E731
                                        [helper.make_tensor_value_info(f"{op}_out", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Exp", ["e"], ["t"]),
         helper.make_node("If", ["c"], ["y"], then_branch=body("Identity"), else_branch=body("Neg"))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=["Exp"])
    tidy_fp16_graph(converted)
    onnx.checker.check_model(converted)
    feeds = {"x": np.array([0.5, 1.0], np.float32), "c": np.array(False)}
    run = lambda m: onnxruntime.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]  # noqa: E731
    np.testing.assert_allclose(run(converted), run(model), rtol=1e-3)


def test_an_rtx_list_that_excludes_the_local_gpu_is_refused(workspace, tmp_path):
    """With flavor=rtx the local GPU must be among the compute capabilities. No GPU here: nvidia-smi is
    stood in for by a script printing what it prints on an RTX 3060 host (name, compute capability, driver)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 3060, 8.6, 550.54.15'\n")
    smi.chmod(0o755)
    workspace.recipe("cnn", cnn_recipe())
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = workspace.run("+recipe=cnn", "target=tensorrt_fp16", "target.options.flavor=rtx",
                           "target.options.compute_capabilities=[8.9]", check=False, env=env)
    assert result.code == 1
    assert ("target.options.compute_capabilities: this host's GPU NVIDIA GeForce RTX 3060 (compute capability 8.6) "
            "is not among those the RTX engine is built for (8.9)") in result.stderr
    assert_nothing_left(workspace)


def test_triton_serves_a_full_tensorrt_engine_with_its_tensorrt_backend(tmp_path):
    """Where compile built a full TensorRT engine (a GPU host), Triton's TensorRT backend serves it."""
    from backends.tensorrt import triton
    from builder.triton import config_pbtxt

    settings = {"engines": [{"flavor": "tensorrt", "file": "model.tensorrt.engine"}], "model_file": "model.onnx",
                "precision": "fp16", "builder": {"workspace_mb": 0}}
    text = config_pbtxt("cnn", triton(settings), {"image": ("float32", [None, 3, 16, 16])},
                        {"logits": ("float32", [None, 5]), "total": ("float32", [None])}, settings,
                        {"max_batch_size": 8, "max_queue_delay_ms": 1})
    (tmp_path / "config.pbtxt").write_text(text)
    config = triton_config(tmp_path / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.backend == "tensorrt"
    assert config.default_model_filename == "model.tensorrt.engine" and config.max_batch_size == 8
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    assert list(config.input[0].dims) == [3, 16, 16]
    # A scalar per batch row: Triton wants dims, so [ 1 ] reshaped to [ ].
    assert list(config.output[1].dims) == [1] and config.output[1].HasField("reshape")
    assert list(config.output[1].reshape.shape) == []


def test_a_token_model_with_a_mask_exported_by_dynamo(workspace):
    """A transformer with token inputs and a padding mask (dynamo export): the fp16 graph keeps the mask
    exact, and the build says the sequence profile stops at model.dims.seq."""
    import numpy as np
    import onnxruntime

    token = {"dtype": "int64", "low": 0, "high": 100}
    workspace.recipe("enc", cnn_recipe(
        factory="tinynets.tiny_encoder", kwargs={}, exporter="dynamo", opset=18, outputs=["hidden"], dims={"batch": 2, "seq": 16},
        inputs=[{"name": "input_ids", "shape": ["batch", "seq"], **token},
                {"name": "attention_mask", "shape": ["batch", "seq"], "dtype": "int64", "low": 1, "high": 2}]))
    result = workspace.run("+recipe=enc", "target=tensorrt_fp16", *QUICK)
    assert "engine profile [min, opt, max]: batch [1, 2, 3], seq [1, 16, 16]" in result.stdout  # 3: a verified batch
    assert "note: the engines take seq up to 16 (model.dims.seq); for longer inputs set " \
           "+target.options.profiles.seq=[1,16,<max>]" in result.stdout
    graph = result.artifact / "model_repository" / "enc" / "1" / "model.onnx"
    onnx.checker.check_model(str(graph))
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, 100, (2, 16))
    mask = np.ones((2, 16), np.int64)
    mask[:, 10:] = 0
    first = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    ids[:, 10:] = 7  # the masked tokens change: the others must not
    second = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert np.isfinite(first).all() and np.array_equal(first[:, :10], second[:, :10])
