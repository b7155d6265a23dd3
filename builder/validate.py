"""Checks of values the schema's types cannot express, each naming the config key to fix."""

from __future__ import annotations

from builder import cases
from builder.data import SOURCES
from builder.errors import MdbuildError
from builder.schema import DTYPES, MODES, ROLES
from builder.sources import EXPORTERS, get_source
from builder.spec import BuildSpec


def _choice(value: object, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise MdbuildError(f"'{value}' is not valid", key, f"choose one of: {', '.join(choices)}")


def validate(spec: BuildSpec) -> None:
    config, model = spec.config, spec.model
    _choice(config["mode"], MODES, "mode")
    get_source(model)
    _choice(model["exporter"], EXPORTERS, "model.exporter")
    if not model["inputs"]:
        raise MdbuildError("the model has no inputs", "model.inputs", "declare each input's name, shape and dtype")
    names = [spec_["name"] for spec_ in model["inputs"]]
    if len(set(names)) != len(names):
        raise MdbuildError(f"input names repeat: {names}", "model.inputs", "give every input its own name")
    for index, spec_ in enumerate(model["inputs"]):
        _choice(spec_["dtype"], DTYPES, f"model.inputs[{index}].dtype")
        for dim in spec_["shape"]:
            if isinstance(dim, str) and dim not in model["dims"]:
                raise MdbuildError(f"dynamic dimension '{dim}' of input '{spec_['name']}' has no size", f"model.dims.{dim}",
                                   f"add model.dims.{dim}=<size used for export and verification>")
            if not isinstance(dim, (int, str)) or isinstance(dim, bool) or (isinstance(dim, int) and dim <= 0):
                raise MdbuildError(f"dimension {dim!r} must be a positive size or a name", f"model.inputs[{index}].shape")
    if not model["outputs"]:
        raise MdbuildError("the model has no outputs", "model.outputs", "name each output")
    for index, spec_ in enumerate(model["inputs"]):
        _choice(spec_["role"], ROLES, f"model.inputs[{index}].role")
    _choice(config["verify"]["source"], ("auto", *SOURCES), "verify.source")
    if not config["verify"]["samples"] or config["verify"]["samples"] < 1:
        raise MdbuildError("must be at least 1", "verify.samples")
    cases.sizes(model, config["verify"])
