"""Source frontends: how each kind of model is exported to ONNX and run for reference outputs.

A source's module has `export(ctx, inputs, out)` and `runner(ctx)` (the loaded model as a function
{input: array} -> {output: array}, for the reference step). What a source contributes to the plan
(the keys it reads, its files and code) is described here without importing any framework.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from builder.code import Code, factory_code
from builder.errors import MdbuildError, missing_extra
from builder.spec import BuildSpec
from builder.versions import importable

EXPORTERS = ("torchscript", "dynamo")
_BUILT = ("model.source", "model.factory", "model.kwargs", "model.seed", "model.inputs", "model.outputs")
_READ = ("model.source", "model.seed", "model.inputs", "model.outputs")


@dataclass(frozen=True)
class Source:
    name: str
    module: str
    model_keys: tuple[str, ...]  # what builds and runs the model (export and reference read them)
    export_keys: tuple[str, ...]  # what the export reads besides
    libraries: tuple[str, ...]
    package: str  # what must be importable to export and run it
    extra: str
    isolated: bool = False  # its steps run in their own process (see builder.execute)

    @property
    def export(self) -> str:
        return f"{self.module}:export"

    def loads_with(self, model: dict[str, Any]) -> tuple[str, ...]:
        """The model keys that build and run this model: one loaded from a file has no factory."""
        unused = () if model.get("factory") else ("model.factory", "model.kwargs")
        return tuple(key for key in self.model_keys if key not in unused)

    def runner(self, ctx) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return importlib.import_module(self.module).runner(ctx)

    def require(self) -> None:
        if not importable(self.package):
            raise missing_extra(self.package, self.extra, "model.source")


SOURCES = {
    "pytorch": Source("pytorch", "builder.sources.pytorch", _BUILT, ("model.dims", "model.opset", "model.exporter"),
                      ("torch", "onnx"), "torch", "torch"),
    "torchscript": Source("torchscript", "builder.sources.pytorch", _READ, ("model.dims", "model.opset", "model.exporter"),
                          ("torch", "onnx"), "torch", "torch"),
    "tensorflow": Source("tensorflow", "builder.sources.tensorflow", _BUILT, ("model.opset",),
                         ("tensorflow", "keras", "tf2onnx", "onnx"), "tensorflow", "tensorflow", isolated=True),
    "mindspore": Source("mindspore", "builder.sources.mindspore", _BUILT, ("model.dims",),
                        ("mindspore", "onnx"), "mindspore", "mindspore"),
    "onnx": Source("onnx", "builder.sources.onnx", ("model.source", "model.inputs", "model.outputs", "model.dims"), (),
                   ("onnx", "onnxruntime"), "onnxruntime", "onnxruntime"),
}


def get_source(model: dict[str, Any]) -> Source:
    name = model["source"]
    if name not in SOURCES:
        raise MdbuildError(f"unknown source '{name}'", "model.source", f"choose one of: {', '.join(SOURCES)}")
    return SOURCES[name]


_FACTORY_SOURCES = {"pytorch": "torchvision.models.resnet50", "mindspore": "builder.examples.lenet.lenet5"}


def source_inputs(spec: BuildSpec) -> tuple[dict[str, Path], Code]:
    """The files whose content the export and reference depend on (model file, weights), by input
    name, and the factory's code."""
    model = spec.model
    code = Code()
    if model.get("factory") and model.get("path"):
        raise MdbuildError(f"a {model['source']} source built from model.factory does not read model.path "
                           f"({model['path']})", "model.path", "remove model.path, or model.factory to build from the file")
    if model["source"] == "tensorflow" and model.get("factory"):
        return {}, factory_code(model["factory"], spec.workdir, "model.factory", "factory")
    if model["source"] in _FACTORY_SOURCES:
        if not model.get("factory"):
            raise MdbuildError(f"a {model['source']} source needs a factory", "model.factory",
                               f"set it to an import path such as {_FACTORY_SOURCES[model['source']]}")
        code = factory_code(model["factory"], spec.workdir, "model.factory", "factory")
        if model.get("weights"):
            return {"weights": spec.existing_path(model["weights"], "model.weights")}, code
        return {}, code
    if not model.get("path"):
        raise MdbuildError(f"model.source={model['source']} reads a model file and none is given", "model.path",
                           "set model.path to the model file")
    if model.get("weights"):  # the file holds its weights
        raise MdbuildError(f"model.source={model['source']} reads its weights from model.path, not model.weights "
                           f"({model['weights']})", "model.weights", "remove model.weights")
    return {"model": spec.existing_path(model["path"], "model.path")}, code
