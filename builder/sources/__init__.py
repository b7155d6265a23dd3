"""Source frontends: how each kind of model is exported to ONNX and run for reference outputs.

What a source contributes to the plan (its files, libraries and config) is computed here without
importing any framework; the export and reference functions import theirs when they run.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from builder.errors import MdbuildError, missing_extra
from builder.spec import BuildSpec
from builder.versions import importable

EXPORTERS = ("torchscript", "dynamo")


@dataclass(frozen=True)
class Source:
    name: str
    export: str  # "module:function"
    reference: str
    libraries: tuple[str, ...]
    package: str  # what must be importable to export and run it
    extra: str
    isolated: bool = False  # its steps run in their own process (see builder.execute)

    def require(self) -> None:
        if not importable(self.package):
            raise missing_extra(self.package, self.extra, "model.source")


SOURCES = {
    "pytorch": Source("pytorch", "builder.sources.pytorch:export", "builder.sources.pytorch:reference",
                      ("torch", "onnx"), "torch", "torch"),
    "torchscript": Source("torchscript", "builder.sources.pytorch:export", "builder.sources.pytorch:reference",
                          ("torch", "onnx"), "torch", "torch"),
    "tensorflow": Source("tensorflow", "builder.sources.tensorflow:export", "builder.sources.tensorflow:reference",
                         ("tensorflow", "keras", "tf2onnx", "onnx"), "tensorflow", "tensorflow", isolated=True),
    "mindspore": Source("mindspore", "builder.sources.mindspore:export", "builder.sources.mindspore:reference",
                        ("mindspore", "onnx"), "mindspore", "mindspore"),
    "onnx": Source("onnx", "builder.sources.onnx:export", "builder.sources.onnx:reference",
                   ("onnx", "onnxruntime"), "onnxruntime", "onnxruntime"),
}


def get_source(model: dict[str, Any]) -> Source:
    name = model["source"]
    if name not in SOURCES:
        raise MdbuildError(f"unknown source '{name}'", "model.source", f"choose one of: {', '.join(SOURCES)}")
    return SOURCES[name]


_FACTORY_SOURCES = {"pytorch": "torchvision.models.resnet50", "mindspore": "builder.examples.lenet.lenet5"}


def source_files(spec: BuildSpec) -> dict[str, Path]:
    """The files whose content the export and reference depend on, by input name."""
    model = spec.model
    files: dict[str, Path] = {}
    if model["source"] == "tensorflow" and model.get("factory"):
        code = local_code(model["factory"], spec.workdir)
        if code is not None:
            files["factory_code"] = code
    elif model["source"] in _FACTORY_SOURCES:
        if not model.get("factory"):
            raise MdbuildError(f"a {model['source']} source needs a factory", "model.factory",
                               f"set it to an import path such as {_FACTORY_SOURCES[model['source']]}")
        code = local_code(model["factory"], spec.workdir)
        if code is not None:
            files["factory_code"] = code
        if model.get("weights"):
            files["weights"] = spec.existing_path(model["weights"], "model.weights")
    else:
        if not model.get("path"):
            raise MdbuildError(f"a {model['source']} source needs a file", "model.path",
                               "set model.path to the model file")
        files["model"] = spec.existing_path(model["path"], "model.path")
    return files


def factory_libraries(model: dict[str, Any], workdir: Path) -> dict[str, str | None]:
    """The installed distribution providing a factory (e.g. torchvision), whose version matters."""
    if model["source"] not in ("pytorch", "tensorflow", "mindspore") or not model.get("factory"):
        return {}
    located = _locate(model["factory"], workdir)
    return {located[1]: metadata.version(located[1])} if located[1] else {}


def local_code(factory: str, workdir: Path) -> Path | None:
    """The user's own module or package a factory comes from (hashed into the keys), or None when it
    comes from an installed distribution (whose version is used instead)."""
    path, distribution = _locate(factory, workdir)
    return None if distribution else path


@functools.lru_cache(maxsize=None)
def _locate(factory: str, workdir: Path) -> tuple[Path | None, str | None]:
    """(the factory's top-level module file or package directory, its distribution or None)."""
    top = factory.split(".")[0]
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None or "." not in factory:
        raise MdbuildError(f"cannot find the module of factory '{factory}'", "model.factory",
                           "give a full import path (package.module.function) importable from this directory")
    path = Path(list(spec.submodule_search_locations)[0]) if spec.submodule_search_locations else (
        Path(spec.origin) if spec.origin else None)
    return path, _distribution_of(top, path)


def _distribution_of(top: str, path: Path | None) -> str | None:
    if path is None or not any(part in ("site-packages", "dist-packages") for part in path.parts):
        return None
    try:
        # Most distributions are named like their package (torch, torchvision); the full scan of
        # every installed distribution costs half a second, so it is only the fallback.
        return metadata.distribution(top).metadata["Name"]
    except metadata.PackageNotFoundError:
        names = metadata.packages_distributions().get(top)
        return names[0] if names else None
