"""Compile the exported ONNX model for the target backend; writes the model files and runtime.json
(the settings verification and serve.py load it with)."""

from __future__ import annotations

import json
from pathlib import Path

from backends import get_backend

RUNTIME_FILE = "runtime.json"


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    target = ctx.spec.target
    backend = get_backend(target["backend"])
    backend.require("target.backend")
    ctx.progress(f"{backend.name} {target['precision']}")
    settings = backend.compile(inputs["model"] / "model.onnx", target, ctx.spec.config["hardware"], out)
    (out / RUNTIME_FILE).write_text(json.dumps({"backend": backend.name, **settings}, indent=2, sort_keys=True))


def load_settings(compiled: Path) -> dict:
    return json.loads((compiled / RUNTIME_FILE).read_text())
