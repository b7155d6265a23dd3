"""Graph simplification with onnxscript's optimizer: constant folding, dead-code removal and
pattern rewrites, before the backend's own optimizations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.optimize.summary import write_summary


def reads(config: dict[str, Any]) -> list[str]:
    return []


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    import onnx
    import onnxscript.optimizer

    model = onnx.load(str(inputs["model"] / "model.onnx"))
    before = len(model.graph.node)
    ctx.progress(f"optimizing {before} nodes")
    simplified = onnxscript.optimizer.optimize(model)
    onnx.checker.check_model(simplified)
    onnx.save(simplified, str(out / "model.onnx"))
    write_summary(out, "simplify", nodes_before=before, nodes_after=len(simplified.graph.node))
