"""TensorFlow sources: a Keras model from a factory by import path (e.g. a Keras application with
seeded random weights), a Keras file (.keras / .h5) or a SavedModel directory, exported with
tf2onnx. The ONNX outputs are renamed to the recipe's output names."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from builder.errors import MdbuildError, first_line
from builder.imports import build_from_factory, import_sdk


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    return import_sdk("tensorflow", "tensorflow", "model.source")


def load_model(ctx) -> Any:
    """A callable Keras model, or a SavedModel's serving signature."""
    tf = _import_tf()
    model_cfg = ctx.config["model"]
    tf.keras.utils.set_random_seed(model_cfg["seed"])
    if "model" not in ctx.paths:
        return build_from_factory(model_cfg, ctx.workdir)
    path = ctx.paths["model"]
    try:
        if path.is_dir():
            return _SavedModel(tf.saved_model.load(str(path)))
        return tf.keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # TF raises many types for a bad file
        raise MdbuildError(f"cannot load a TensorFlow model from {path} ({first_line(exc, 200)})", "model.path",
                           "give a SavedModel directory or a .keras / .h5 file") from exc


class _SavedModel:
    """A SavedModel's serving signature; holds the loaded object, which owns the variables."""

    def __init__(self, loaded):
        self.loaded = loaded
        self.signature = loaded.signatures["serving_default"]

    def __call__(self, **tensors):
        return self.signature(**tensors)


def _signature(tf, model_cfg: dict[str, Any]) -> tuple:
    return tuple(tf.TensorSpec([None if isinstance(d, str) else d for d in spec["shape"]], spec["dtype"], name=spec["name"])
                 for spec in model_cfg["inputs"])


def export(ctx, inputs: dict[str, Path], out: Path) -> None:
    tf = _import_tf()
    import onnx
    import tf2onnx

    model_cfg = ctx.config["model"]
    model = load_model(ctx)
    ctx.progress(f"tf2onnx (opset {model_cfg['opset']})")
    signature = _signature(tf, model_cfg)
    try:
        if isinstance(model, tf.keras.Model):
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=model_cfg["opset"])
        else:  # a SavedModel signature: wrapped in a tf.function returning its outputs in key order
            names = [spec["name"] for spec in model_cfg["inputs"]]

            def ordered(*tensors):
                result = model(**dict(zip(names, tensors)))
                return [result[key] for key in sorted(result)]

            function = tf.function(ordered, input_signature=signature)
            proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=model_cfg["opset"])
    except Exception as exc:  # tf2onnx raises plain Exceptions for unsupported ops
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in reversed(lines) if "Error" in line), lines[0] if lines else type(exc).__name__)
        raise MdbuildError(f"tf2onnx failed: {detail[:300]}", "model.source",
                           "try another model.opset, or run with traceback=true for the converter's error") from exc
    _rename_outputs(proto, list(model_cfg["outputs"]))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out / "model.onnx"))


def _rename_outputs(proto, names: list[str]) -> None:
    """tf2onnx names outputs after Keras layers; the recipe's names are what every step uses."""
    from onnx import helper

    outputs = list(proto.graph.output)
    if len(outputs) != len(names):
        raise MdbuildError(f"the model has {len(outputs)} outputs but the recipe names {len(names)}: {names}",
                           "model.outputs", f"list {len(outputs)} names")
    for output, name in zip(outputs, names):
        if output.name != name:
            proto.graph.node.append(helper.make_node("Identity", [output.name], [name]))
            output.name = name


def runner(ctx):
    """The source model as a function of numpy feeds, for the reference step."""
    tf = _import_tf()
    model = load_model(ctx)
    names = [spec["name"] for spec in ctx.config["model"]["inputs"]]
    outputs_named = list(ctx.config["model"]["outputs"])

    def run(feeds):
        if isinstance(model, tf.keras.Model):
            result = model([tf.constant(feeds[n]) for n in names] if len(names) > 1 else tf.constant(feeds[names[0]]),
                           training=False)
        else:
            result = model(**{n: tf.constant(feeds[n]) for n in names})
        if isinstance(result, dict):
            result = [result[k] for k in sorted(result)]
        elif not isinstance(result, (list, tuple)):
            result = [result]
        return dict(zip(outputs_named, (r.numpy() for r in result)))

    return run


def read_signature(path: Path) -> list[dict[str, Any]]:
    """[{name, shape (None for dynamic sizes), dtype}] of a SavedModel's serving signature or a Keras
    model's inputs."""
    tf = _import_tf()
    if path.is_dir():
        _, specs = tf.saved_model.load(str(path)).signatures["serving_default"].structured_input_signature
        tensors = [(name, spec.shape.as_list(), spec.dtype.name) for name, spec in sorted(specs.items())]
    else:
        model = tf.keras.models.load_model(str(path), compile=False)
        tensors = [(tensor.name, list(tensor.shape), str(tf.as_dtype(tensor.dtype).name)) for tensor in model.inputs]
    return [{"name": name, "shape": shape, "dtype": dtype} for name, shape, dtype in tensors]


if __name__ == "__main__":  # python -m builder.sources.tensorflow MODEL ANSWER.json (see builder.signature)
    Path(sys.argv[2]).write_text(json.dumps(read_signature(Path(sys.argv[1]))))
