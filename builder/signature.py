"""Input signatures read from the model when the recipe declares none: TensorFlow SavedModel
directories and Keras .keras / .h5 files (model.path). Reading one loads TensorFlow, so it runs in a
child process, once per model content, and is remembered in the cache: planning and cached rebuilds
never import TensorFlow."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from builder.errors import MdbuildError
from builder.hashing import canonical_json, sha256_text
from builder.schema import InputSpec
from builder.spec import BuildSpec
from builder.versions import library_versions

BATCH = "batch"
_READER_VERSION = 1  # of builder.sources.tensorflow.read_signature


def with_signature(spec: BuildSpec, cache) -> BuildSpec:
    """The spec, with model.inputs read from the model file when the recipe leaves them empty."""
    model = spec.model
    if model["inputs"]:
        return spec
    if model["source"] != "tensorflow" or not model.get("path"):
        raise MdbuildError("the model has no inputs", "model.inputs",
                           "declare each input's name, shape and dtype (they are read from the model only for "
                           "TensorFlow files: model.source=tensorflow with model.path)")
    path = spec.resolve_path(model["path"])
    if not path.exists():
        raise MdbuildError(f"file not found: {path}", "model.path", "check the path")
    record = sha256_text(canonical_json({"model": cache.digests.path(path), "reader": _READER_VERSION,
                                         "libraries": library_versions("tensorflow", "keras")}))
    inputs = cache.read_record("signatures", record)
    if inputs is None:
        inputs = _read_in_child(path)
        cache.write_record("signatures", record, inputs)
    dims = dict(model["dims"])
    declared = []
    for tensor in inputs:
        shape = [_dim_name(tensor["name"], index, size) for index, size in enumerate(tensor["shape"])]
        if shape and shape[0] == BATCH:
            dims.setdefault(BATCH, 1)
        declared.append(dataclasses.asdict(InputSpec(name=tensor["name"], shape=shape, dtype=tensor["dtype"])))
    return dataclasses.replace(spec, config={**spec.config, "model": {**model, "inputs": declared, "dims": dims}})


def _dim_name(tensor: str, index: int, size: int | None) -> int | str:
    if size is not None:
        return size
    return BATCH if index == 0 else f"{tensor}_{index}"  # validation then asks for model.dims.<name>


def _read_in_child(path: Path) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="mdbuild-signature-") as scratch:
        answer = Path(scratch) / "signature.json"
        done = subprocess.run([sys.executable, "-m", "builder.sources.tensorflow", str(path), str(answer)],
                              capture_output=True, text=True)
        if done.returncode != 0 or not answer.is_file():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            detail = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "no output")
            raise MdbuildError(f"cannot read the input signature of {path}: {detail.strip()[:300]}", "model.path",
                               "give a SavedModel directory or a .keras / .h5 file, or declare model.inputs")
        return json.loads(answer.read_text())
