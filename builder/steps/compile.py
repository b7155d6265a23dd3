"""Compile the exported ONNX model for the target backend; writes the model files and runtime.json
(the settings verification and serve.py load it with)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backends import Backend, get_backend

RUNTIME_FILE = "runtime.json"


def reads(backend: Backend) -> list[str]:
    return ["target.backend", "target.precision", "target.options", *backend.reads]


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    target = ctx.config["target"]
    backend = get_backend(target["backend"])
    backend.require("target.backend")
    ctx.progress(f"{backend.name} {target['precision']}")
    settings = backend.compile(inputs["model"] / "model.onnx", ctx.config, out)
    (out / RUNTIME_FILE).write_text(json.dumps({"backend": backend.name, **settings}, indent=2, sort_keys=True))


def load_settings(compiled: Path) -> dict[str, Any]:
    return json.loads((compiled / RUNTIME_FILE).read_text())
