"""Checks of values the schema's types cannot express, each naming the config key to fix."""

from __future__ import annotations

import dataclasses
import math

from builder import cases
from builder.data import SOURCES, random_verification
from builder.errors import MdbuildError
from builder.inputs import batch_dim
from builder.optimize import LOSS_ORDER
from builder.schema import DTYPES, MODES, ROLES, Tolerance
from builder.sources import EXPORTERS, get_source
from builder.spec import BuildSpec


def _choice(value: object, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise MdbuildError(f"'{value}' is not valid", key, f"choose one of: {', '.join(choices)}")


def validate(spec: BuildSpec) -> list[str]:
    """Raises on the first bad value; returns the warnings (values that nothing will read)."""
    config, model = spec.config, spec.model
    _choice(config["mode"], MODES, "mode")
    get_source(model)
    _choice(model["exporter"], EXPORTERS, "model.exporter")
    if not model["inputs"]:
        raise MdbuildError("the model has no inputs", "model.inputs", "declare each input's name, shape and dtype")
    for name, size in model["dims"].items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise MdbuildError(f"{size!r} is not a size", f"model.dims.{name}", "give a whole number of at least 1")
    names = [spec_["name"] for spec_ in model["inputs"]]
    if len(set(names)) != len(names):
        raise MdbuildError(f"input names repeat: {names}", "model.inputs", "give every input its own name")
    for index, spec_ in enumerate(model["inputs"]):
        if not spec_["name"]:
            raise MdbuildError("an input has no name", f"model.inputs[{index}].name", "give the model's input name")
        if not spec_["shape"]:
            raise MdbuildError(f"input '{spec_['name']}' has no dimensions: inputs are batched", f"model.inputs[{index}].shape",
                               "give its shape with the batch first, e.g. [batch, 4]")
        _choice(spec_["dtype"], DTYPES, f"model.inputs[{index}].dtype")
        for dim in spec_["shape"]:
            if isinstance(dim, str) and dim not in model["dims"]:
                raise MdbuildError(f"dynamic dimension '{dim}' of input '{spec_['name']}' has no size", f"model.dims.{dim}",
                                   f"add model.dims.{dim}=<size used for export and verification>")
            if not isinstance(dim, (int, str)) or isinstance(dim, bool) or (isinstance(dim, int) and dim <= 0):
                raise MdbuildError(f"dimension {dim!r} must be a positive size or a name", f"model.inputs[{index}].shape",
                                   "give whole numbers of at least 1, or names of model.dims")
    if not model["outputs"]:
        raise MdbuildError("the model has no outputs", "model.outputs", "name each output")
    if len(set(model["outputs"])) != len(model["outputs"]):
        raise MdbuildError(f"output names repeat: {model['outputs']}", "model.outputs", "give every output its own name")
    for key, name in [*((f"model.inputs[{i}].name", n) for i, n in enumerate(names)),
                      *(("model.outputs", n) for n in model["outputs"])]:
        if not isinstance(name, str) or any(char in name for char in '"\\') or not name.isprintable():
            raise MdbuildError(f"{name!r} cannot name a tensor in the artifact's configs (Triton's config.pbtxt)", key,
                               "use letters, digits and _ . : / - in tensor names")
    _batch(model["inputs"])
    for index, spec_ in enumerate(model["inputs"]):
        _values(spec_, f"model.inputs[{index}]")
    unread = _data_sections(config)
    _verification(config, names)
    _images(config)
    _settings(config)
    return unread


# Numbers the schema types but cannot bound: (key, lowest allowed, whether the lowest itself is allowed, what it is).
_BOUNDS = (
    ("serving.max_batch_size", 1, True, "rows per batch (1: no batching)"),
    ("serving.max_queue_delay_ms", 0, True, "milliseconds a request waits for a batch"),
    ("serving.max_body_bytes", 1, True, "bytes of a request body"),
    ("serving.top_k", 1, True, "classes answered"),
    ("serving.drift_window", 1, True, "rows"),
    ("serving.drift_min_rows", 1, True, "rows"),
    ("serving.drift_threshold", 0, False, "a population stability index"),
    ("hardware.intra_op_threads", 0, True, "threads (0: the runtime chooses)"),
    ("hardware.inter_op_threads", 0, True, "threads (0: the runtime chooses)"),
    ("verify.seed", 0, True, "a seed"),
    ("model.seed", 0, True, "a seed"),
    ("model.opset", 7, True, "an ONNX opset (7 is the oldest ONNX Runtime runs)"),
    ("verify.latency.warmup_runs", 0, True, "runs"),
    ("verify.latency.min_runs", 1, True, "runs"),
    ("verify.latency.max_runs", 1, True, "runs"),
    ("verify.latency.max_seconds", 0, False, "seconds"),
    ("verify.latency.stable_within", 0, False, "a fraction"),
    ("preprocess.scale", 0, False, "the factor applied to pixel values"),
    ("evaluation.max_drop", 0, True, "points of the metric the artifact may lose"),
)
_UNBOUNDED = {"evaluation.max_drop"}  # inf: the drop is reported, not gated
_MOST_THREADS = 1024
_NEWEST_OPSET = 25
_PREPROCESS_CHOICES = {"layout": ("NCHW", "NHWC"), "color": ("RGB", "BGR", "L")}
_SCORES = ("softmax", "raw")
_LIMITS = tuple(f.name for f in dataclasses.fields(Tolerance))
# Verification holds its inputs in memory: a size past this is a typo, not a model (measured: 20.1 TiB asked for).
_MOST_BYTES = 16 * 2**30


def _settings(config: dict) -> None:
    """The serving, hardware, latency and preprocessing values: in range, one of their choices."""
    for key, lowest, inclusive, what in _BOUNDS:
        value = _at(config, key)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < lowest
                or (value == lowest and not inclusive) or (math.isinf(value) and key not in _UNBOUNDED)):
            bound = f"at least {lowest}" if inclusive else f"more than {lowest}"
            raise MdbuildError(f"{value!r} is not valid: {what}, {bound}", key, f"give a number {bound}")
    for key in ("hardware.intra_op_threads", "hardware.inter_op_threads"):
        if _at(config, key) > _MOST_THREADS:  # 100000 threads hung verification
            raise MdbuildError(f"{_at(config, key)} threads is past any machine's", key, f"give at most {_MOST_THREADS} (0: the runtime chooses)")
    if config["model"]["opset"] > _NEWEST_OPSET:
        raise MdbuildError(f"opset {config['model']['opset']} is newer than any exporter knows", "model.opset",
                           f"give an opset from 7 to {_NEWEST_OPSET} (default 18)")
    for section in ("calibration", "evaluation"):
        samples = config[section]["samples"]
        if samples is not None and (isinstance(samples, bool) or samples < 1):
            raise MdbuildError(f"{samples} samples is no data", f"{section}.samples", "give at least 1, or null for all")
    outputs = config["model"]["outputs"]
    for key in ("serving.output", "evaluation.output"):
        if _at(config, key) is not None and _at(config, key) not in outputs:
            raise MdbuildError(f"'{_at(config, key)}' is not an output of the model", key, f"choose from: {', '.join(outputs)}")
    _tolerances(config["verify"]["tolerances"])
    latency = config["verify"]["latency"]
    if latency["min_runs"] > latency["max_runs"]:
        raise MdbuildError(f"min_runs {latency['min_runs']} exceeds max_runs {latency['max_runs']}", "verify.latency.min_runs",
                           "make min_runs at most max_runs")
    _choice(config["serving"]["scores"], _SCORES, "serving.scores")
    serving = config["serving"]
    if serving["drift_min_rows"] > serving["drift_window"]:
        raise MdbuildError(f"drift_min_rows {serving['drift_min_rows']} exceeds drift_window {serving['drift_window']}: "
                           "the drift alerts could never fire", "serving.drift_min_rows", "make it at most serving.drift_window")
    if not config["output"]["dir"]:
        raise MdbuildError("the artifacts' directory is empty", "output.dir", "give a directory, e.g. artifacts (the default)")
    preprocess = config["preprocess"]
    for key, choices in _PREPROCESS_CHOICES.items():
        _choice(preprocess[key], choices, f"preprocess.{key}")
    for key in ("resize", "center_crop"):
        if preprocess[key] is not None and preprocess[key] < 1:
            raise MdbuildError(f"{preprocess[key]} pixels is not a size", f"preprocess.{key}", "give a size of at least 1, or null")
    if preprocess["std"] and min(preprocess["std"]) <= 0:
        raise MdbuildError(f"std {preprocess['std']} divides by a value that is not positive", "preprocess.std",
                           "give positive standard deviations")
    channels = 1 if preprocess["color"] == "L" else 3
    for key in ("mean", "std"):
        if preprocess[key] and len(preprocess[key]) not in (1, channels):
            raise MdbuildError(f"{len(preprocess[key])} values for {channels} channels ({preprocess['color']})",
                               f"preprocess.{key}", f"give 1 value or {channels}")
    _memory(config)


def _tolerances(tolerances: dict) -> None:
    """Finite limits in range: a similarity in [0, 1], an error at least 0 (NaN or inf turned a gate off)."""
    for level, limits in tolerances.items():
        if level not in LOSS_ORDER:  # a misspelt level's limits would apply to nothing
            raise MdbuildError(f"'{level}' is not a level of loss", f"verify.tolerances.{level}",
                               f"give limits for the levels {', '.join(LOSS_ORDER)}")
        for key, value in (limits or {}).items():
            if key not in _LIMITS:  # `+verify.tolerances.fp32.typo=...` gets past the schema
                raise MdbuildError("no such limit", f"verify.tolerances.{level}.{key}", f"valid limits: {', '.join(_LIMITS)}")
            if value is None:
                continue
            similarity = key.startswith("min_")
            if isinstance(value, bool) or not math.isfinite(value) or value < 0 or (similarity and value > 1):
                span = "from 0 to 1" if similarity else "a finite number of at least 0"
                raise MdbuildError(f"{value!r} is not a limit", f"verify.tolerances.{level}.{key}", f"give {span}, or null for none")


def _memory(config: dict) -> None:
    """The verification inputs at model.dims fit in memory (a typo of a dimension or a sample count does not)."""
    model, samples = config["model"], config["verify"]["samples"]
    total = 0
    for spec_ in model["inputs"]:
        count = 1
        for dim in spec_["shape"]:
            count *= model["dims"][dim] if isinstance(dim, str) else dim
        total += count * _ITEMSIZE.get(spec_["dtype"], 8)
    if total * samples > _MOST_BYTES:
        largest = max(model["dims"], key=model["dims"].get) if model["dims"] else None
        # One sample past the bound: a dimension's typo; else the sample count's.
        key = f"model.dims.{largest}" if largest and total > _MOST_BYTES else "verify.samples"
        raise MdbuildError(f"{samples} verification samples at model.dims hold {total * samples / 2**30:.3g} GiB of "
                           f"inputs (at most {_MOST_BYTES // 2**30} GiB)", key, "check model.dims and verify.samples for a typo")


_ITEMSIZE = {"float16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1, "int32": 4, "int64": 8, "bool": 1}


def _at(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def _batch(inputs: list[dict]) -> None:
    """Every input's first dimension is the batch: one name (dynamic) or one size."""
    firsts = {spec_["name"]: repr(spec_["shape"][0]) for spec_ in inputs}  # every input has a shape (checked before)
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


def _data_sections(config: dict) -> list[str]:
    """Each data set's source is one it can be. A path or factory its source does not read is a warning,
    not an error: a sweep over sources (`calibration.source=factory,random`) leaves the recipe's factory."""
    unread = []
    for section, sources in (("verify", ("auto", *SOURCES)), ("calibration", SOURCES),
                             ("evaluation", tuple(s for s in SOURCES if s != "random"))):
        data = config[section]
        if section != "verify" and data["source"] is None:
            sources = (None, *sources)
        _choice(data["source"], sources, f"{section}.source")
        reads = {"npz": "path", "images": "path", "factory": "factory"}.get(data["source"])
        for key in ("path", "factory"):
            if data[key] and key != reads:
                source = f"{section}.source={data['source']}" if data["source"] else f"no {section}.source is set"
                unread.append(f"{section}.{key}: {data[key]} is not read: {source}")
    return unread


def _images(config: dict) -> None:
    """Where image files become the input (image data sets, the server's classify route), the input is
    one image of preprocess.color's channels in preprocess.layout."""
    sections = [s for s in ("verify", "calibration", "evaluation") if config[s]["source"] == "images"]
    if not sections and not config["serving"]["labels"]:
        return
    where = f"{sections[0]}.source=images" if sections else "serving.labels"
    inputs, preprocess = config["model"]["inputs"], config["preprocess"]
    if len(inputs) != 1:
        raise MdbuildError(f"images feed a one-input model; this one has {len(inputs)} inputs ({where})",
                           f"{sections[0]}.source" if sections else "serving.labels", "use npz or factory data")
    shape = inputs[0]["shape"]
    layout = preprocess["layout"]
    if len(shape) != 4:
        raise MdbuildError(f"an image input is [batch, {', '.join(layout[1:])}] ({where}, preprocess.layout={layout}); "
                           f"'{inputs[0]['name']}' is {list(shape)}", "model.inputs[0].shape",
                           f"declare 4 dimensions, e.g. [batch, {'3, 224, 224' if layout == 'NCHW' else '224, 224, 3'}]")
    channels = shape[layout.index("C")]
    wanted = 1 if preprocess["color"] == "L" else 3
    if isinstance(channels, int) and channels != wanted:
        other = "NHWC" if layout == "NCHW" else "NCHW"
        if shape[other.index("C")] == wanted:  # the channels sit where the other layout has them
            key, fix = "preprocess.layout", f"set preprocess.layout={other}"
        else:
            key, fix = "preprocess.color", "set preprocess.color to the input's channels (L: 1; RGB, BGR: 3)"
        raise MdbuildError(f"preprocess.color={preprocess['color']} gives {wanted} channel{'s' * (wanted > 1)}; input "
                           f"'{inputs[0]['name']}' {list(shape)} has {channels} at the C of preprocess.layout={layout}",
                           key, fix)


def _verification(config: dict, inputs: list[str]) -> None:
    verify, outputs = config["verify"], config["model"]["outputs"]
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
