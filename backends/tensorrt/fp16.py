"""fp16 for TensorRT (trt_fp16): a mixed-precision ONNX graph. Weights and activations become float16
except where float16 fails: operations whose results lose too much in it (_KEPT_FP32), and every node
that writes or reads a tensor beyond trt_fp16.max_abs in magnitude on sample inputs (the recipe's calibration data
where it declares some, else seeded inputs), measured with ONNX Runtime on the fp32 graph. Inputs and
outputs stay float32 unless trt_fp16.keep_io_types=false. TensorRT computes in the graph's types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from backends.onnx_graph import tensors_read, tidy_fp16_graph
from builder.errors import MdbuildError
from builder.inputs import make_inputs
from builder.optimize.summary import write_summary
from builder.steps.calibration import batches, load_calibration

# Kept in fp32: reductions and exponentials whose float16 range or rounding is the usual source of
# fp16 failures (layer norms computed as ReduceMean/Pow/Sqrt, softmax's Exp, sums over long axes).
_KEPT_FP32 = ("Pow", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Sqrt", "Exp", "Log",
              "Softmax", "LogSoftmax", "LayerNormalization", "Erf")
_SAMPLES = 8


def calibrates(config: dict[str, Any]) -> bool:
    """Ranges are measured on the calibration data where the recipe declares some."""
    return config["calibration"]["source"] is not None


def reads(config: dict[str, Any]) -> list[str]:
    keys = ["trt_fp16.keep_io_types", "trt_fp16.max_abs"]
    return keys if calibrates(config) else keys + ["model.inputs", "model.dims"]


def check(config: dict[str, Any]) -> None:
    limit = config["trt_fp16"]["max_abs"]
    if not 0 < limit <= 65504:  # also refuses nan
        raise MdbuildError(f"{limit} is not a magnitude float16 can hold", "trt_fp16.max_abs",
                           "give a number above 0 and at most 65504 (float16's largest); 512 is the default")


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    cfg = ctx.config["trt_fp16"]
    model = onnx.load(str(inputs["model"] / "model.onnx"))
    for index, node in enumerate(model.graph.node):  # the fp32 list names nodes
        node.name = node.name or f"{node.op_type}_{index}"
    ctx.progress("measuring activation ranges")
    peaks = _peaks(model, _samples(ctx, inputs))
    hot = _out_of_range(model, peaks, cfg["max_abs"])
    blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(_KEPT_FP32))
    ctx.progress("converting to mixed precision")
    converted = convert_float_to_float16(model, keep_io_types=cfg["keep_io_types"], op_block_list=blocked,
                                         node_block_list=hot)
    tidy_fp16_graph(converted)
    onnx.save(converted, str(out / "model.onnx"))
    by_op = sum(1 for node in model.graph.node if node.op_type in blocked)
    write_summary(out, "trt_fp16", keep_io_types=cfg["keep_io_types"], nodes=len(model.graph.node), kept_fp32_by_op=by_op,
                  kept_fp32_by_range=len(hot), max_abs=cfg["max_abs"],
                  largest_activation=max(peaks.values(), default=0.0))


def _out_of_range(model, peaks: dict[str, float], limit: float) -> list[str]:
    """The nodes that write or read a tensor beyond the limit (a float16 input would overflow too)."""
    hot = {tensor for tensor, peak in peaks.items() if not peak <= limit}
    return sorted(node.name for node in model.graph.node if hot & (tensors_read(node) | set(node.output)))


def _samples(ctx, inputs: dict[str, Path]) -> list[dict[str, np.ndarray]]:
    if "calibration" in inputs:
        found, _ = load_calibration(inputs["calibration"])
        return list(batches(found[:_SAMPLES]))
    model = ctx.config["model"]
    arrays = make_inputs(model["inputs"], model["dims"], _SAMPLES, seed=0)
    return [{name: array[index] for name, array in arrays.items()} for index in range(_SAMPLES)]


def _peaks(model, samples: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """The largest magnitude (inf where not finite) of each float input and tensor nodes write, on the samples,
    with the fp32 graph run unoptimized by ONNX Runtime, every float tensor exposed as an output."""
    import onnx
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    typed = onnx.shape_inference.infer_shapes(probe).graph
    floats = {v.name for v in [*typed.value_info, *typed.output] if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    names = [output for node in probe.graph.node for output in node.output if output in floats]
    exposed = {output.name for output in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in names if name not in exposed)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    peaks: dict[str, float] = {}
    for feeds in samples:
        values = zip(names, session.run(names, feeds))
        inputs = ((name, value) for name, value in feeds.items() if np.asarray(value).dtype.kind == "f")
        for name, value in [*inputs, *values]:
            value = np.abs(np.asarray(value, dtype=np.float64))
            peak = float(value.max()) if value.size and np.isfinite(value).all() else (np.inf if value.size else 0.0)
            peaks[name] = max(peaks.get(name, 0.0), peak)
    return peaks
