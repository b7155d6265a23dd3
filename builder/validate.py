"""Checks of values the schema's types cannot express, each naming the config key to fix."""

from __future__ import annotations

from builder import cases
from builder.data import SOURCES, random_verification
from builder.errors import MdbuildError
from builder.inputs import batch_dim
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
    _batch(model["inputs"])
    for index, spec_ in enumerate(model["inputs"]):
        _values(spec_, f"model.inputs[{index}]")
    _verification(config, names)


def _batch(inputs: list[dict]) -> None:
    """Every input's first dimension is the batch: one name (dynamic) or one size."""
    firsts = {spec_["name"]: repr(spec_["shape"][0]) if spec_["shape"] else "no dimension (a scalar)" for spec_ in inputs}
    if len(set(firsts.values())) > 1:
        (a, one), (b, other) = [next(item for item in firsts.items() if item[1] == value)
                                for value in list(dict.fromkeys(firsts.values()))[:2]]
        raise MdbuildError(f"input '{a}' starts with {one} and input '{b}' with {other}: the first dimension of "
                           "every input is the batch", "model.inputs", "give every input the same first dimension")


def _values(spec_: dict, where: str) -> None:
    _choice(spec_["role"], ROLES, f"{where}.role")
    low, high = spec_["low"], spec_["high"]
    if low is not None and high is not None and low >= high:
        raise MdbuildError(f"the range [{low}, {high}) is empty", f"{where}.high", f"make high greater than low ({low})")
    if spec_["role"] == "mask" and (low, high) not in ((None, None), (0, 2), (0, None), (None, 2)):
        raise MdbuildError(f"a mask holds 0 and 1, not [{low}, {high})", f"{where}.role",
                           "give role=ids (token ids, indices) or leave low/high out")


def _verification(config: dict, inputs: list[str]) -> None:
    verify, outputs = config["verify"], config["model"]["outputs"]
    _choice(verify["source"], ("auto", *SOURCES), "verify.source")
    if not verify["samples"] or verify["samples"] < 1:
        raise MdbuildError(f"{verify['samples']} samples verify nothing", "verify.samples", "give at least 1 (default 8)")
    sizes = cases.sizes(config["model"], verify)
    batch = batch_dim(config["model"]["inputs"])
    if not random_verification(config) and set(verify["sizes"]) - {batch}:
        dim = sorted(set(verify["sizes"]) - {batch})[0]
        raise MdbuildError(f"sizes of '{dim}' apply to random verification inputs; declared data keeps its own "
                           f"lengths ({', '.join(f'{d} {v}' for d, v in sizes.items())})", f"verify.sizes.{dim}",
                           "give samples of the lengths to verify in the data, or use verify.source=random")
    for key, known in (("class_scores", outputs), ("allow_uninformative", [*outputs, *inputs])):
        unknown = [name for name in verify[key] or [] if name not in known]
        if unknown:
            raise MdbuildError(f"'{unknown[0]}' is not {'an output' if key == 'class_scores' else 'an input or output'} "
                               "of the model", f"verify.{key}", f"choose from: {', '.join(known)}")
