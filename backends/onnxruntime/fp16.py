"""fp16 conversion of the ONNX graph; inputs and outputs stay float32 unless fp16.keep_io_types=false."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.onnx_graph import tidy_fp16_graph
from builder.optimize.summary import write_summary


def reads(config: dict[str, Any]) -> list[str]:
    return ["fp16.keep_io_types"]


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(inputs["model"] / "model.onnx"))
    keep_io = ctx.config["fp16"]["keep_io_types"]
    ctx.progress("converting initializers and ops to float16")
    converted = convert_float_to_float16(model, keep_io_types=keep_io, disable_shape_infer=False)
    tidy_fp16_graph(converted)
    onnx.save(converted, str(out / "model.onnx"))
    write_summary(out, "fp16", keep_io_types=keep_io)
