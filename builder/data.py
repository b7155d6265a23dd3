"""Calibration and evaluation data sets declared in a recipe (`calibration:` / `evaluation:`).

A sample is one model input without its batch dimension. Sources:
- npz: arrays named after the model inputs (or `inputs`/`x` for a one-input model), labels in
  `labels`/`y`; a .npy file holds the inputs of a one-input model.
- images: a folder of .png/.jpg/.bmp files read with the recipe's preprocessing; for evaluation, one
  sub-folder per class, classes numbered in sorted order of the folder names.
- factory: the import path of a function returning an array, {input name: array}, or (inputs, labels).
- random: seeded inputs (calibration and verification), as an explicit opt-in the report shows.
Samples of a dynamic sequence may differ in length (a factory returns a list of arrays per input).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from builder.code import Code, factory_code
from builder.errors import MdbuildError, first_line
from builder.imports import resolve_callable
from builder import cases
from builder.inputs import batch_dim, random_samples
from builder.samples import Sample
from builder.serving.preprocess import load_image
from builder.spec import BuildSpec

SOURCES = ("npz", "images", "factory", "random")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def reads(config: dict[str, Any], section: str) -> list[str]:
    """The keys loading a data set reads (its files and code are inputs of their own)."""
    source = config[section]["source"]
    keys = [f"{section}.source", f"{section}.samples", "model.inputs", "model.dims"]
    if source == "factory":
        keys += [f"{section}.factory", f"{section}.kwargs"]
    elif source == "images":
        keys.append("preprocess")
    elif source == "random":
        keys.append("model.seed")
    return keys


def verification_section(config: dict[str, Any]) -> str:
    """Where verification samples come from: `verify` (verify.source names the data, or random), else with
    verify.source=auto the evaluation set, else the calibration set; with random calibration (an opt-in
    already), other seeded random inputs: int8 verified on its own calibration samples would be in-sample."""
    if config["verify"]["source"] != "auto":
        return "verify"
    if config["evaluation"]["source"]:
        return "evaluation"
    if config["calibration"]["source"]:
        return "verify" if config["calibration"]["source"] == "random" else "calibration"
    raise MdbuildError("the recipe declares no data to verify on", "verify.source",
                       "declare evaluation or calibration data, give verify.source=npz|images|factory with verify.path "
                       "or verify.factory, or opt in to seeded random inputs with verify.source=random")


def random_verification(config: dict[str, Any]) -> bool:
    return verification_section(config) == "verify" and config["verify"]["source"] in ("random", "auto")


def data_inputs(spec: BuildSpec, section: str) -> tuple[dict[str, Path], Code]:
    """The files a data set's content comes from, and its factory's code (hashed into the keys of
    the steps that use it)."""
    data = spec.config[section]
    if data["source"] is None:
        return {}, Code()
    if data["source"] in ("npz", "images"):  # the source is one of SOURCES (validate)
        if not data["path"]:
            raise MdbuildError(f"a {data['source']} data set needs a path", f"{section}.path", "set it to the file or folder")
        path = spec.existing_path(data["path"], f"{section}.path")
        if data["source"] == "npz":
            _check_npz(path, spec.model, section)
        else:
            _image_files(path, data["samples"], section)
        return {f"{section} data": path}, Code()
    if data["source"] == "factory":
        if not data["factory"]:
            raise MdbuildError("a factory data set needs an import path", f"{section}.factory", "set it to package.module.function")
        return {}, factory_code(data["factory"], spec.workdir, f"{section}.factory", section)
    if not data["samples"]:
        raise MdbuildError(f"random {section} data needs a sample count", f"{section}.samples", "set it, e.g. 32")
    return {}, Code()


def load(config: dict[str, Any], paths: dict[str, Path], section: str, workdir: Path) -> tuple[list[Sample], Any]:
    """(samples, labels (N,) or None), at most `samples` samples; `config` holds the keys `reads`
    names, `paths` the data set's files."""
    data, model = config[section], config["model"]
    names = [i["name"] for i in model["inputs"]]
    labels = None
    if data["source"] == "random":  # sequences of the lengths verification takes (short, middle, longest)
        batch = batch_dim(model["inputs"])
        lengths = {dim: values for dim, values in cases.sizes(model, {"sizes": {}}).items() if dim != batch}
        return random_samples(model["inputs"], model["dims"], data["samples"], model["seed"] + 1, lengths), None
    if data["source"] == "npz":
        arrays, labels = _from_npz(paths[f"{section} data"], names, section)
    elif data["source"] == "images":
        arrays, labels = _from_images(paths[f"{section} data"], names, data, config["preprocess"], section)
    else:
        arrays, labels = _from_factory(data, names, section, workdir)
    key = f"{section}.{'factory' if data['source'] == 'factory' else 'path'}"
    counts = {name: len(array) for name, array in arrays.items()}
    if len(set(counts.values())) > 1:  # taking the fewest would pair samples of one input with another's
        raise MdbuildError(f"the inputs hold different numbers of samples ({', '.join(f'{n} {c}' for n, c in counts.items())})",
                           key, "give every input the same samples, in the same order")
    count = min(counts.values())
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != count:
            raise MdbuildError(f"labels of shape {list(labels.shape)} for {count} samples", key,
                               "give one label per sample, a 1-D array")
    if data["samples"]:
        count = min(count, data["samples"])
    if count == 0:
        raise MdbuildError(f"the {section} data set is empty", key, "give it at least one sample")
    samples = [{name: np.ascontiguousarray(arrays[name][index]) for name in names} for index in range(count)]
    labels = None if labels is None else np.asarray(labels)[:count]
    _check_shapes(model, samples, key)
    return samples, labels


def _npz_arrays(path: Path, names: list[str], section: str) -> tuple[dict[str, str], str | None]:
    """{input name: array name} and the labels' array name of an .npz (an .npy: one input, no labels)."""
    if _numpy_kind(path, section) == "npy":
        if len(names) != 1:
            raise MdbuildError("a .npy file holds one input, the model has several", f"{section}.path", "use an .npz with one array per input")
        return {names[0]: ""}, None
    with _open_npz(path, section) as archive:
        keys = set(archive.files)
    if set(names) <= keys:
        arrays = {name: name for name in names}
    elif len(names) == 1 and keys & {"inputs", "x"}:
        arrays = {names[0]: "inputs" if "inputs" in keys else "x"}
    else:
        raise MdbuildError(f"{path.name} has arrays {sorted(keys)}; expected {names}", f"{section}.path",
                           "name the arrays after the model inputs (or inputs/x for a one-input model)")
    return arrays, "labels" if "labels" in keys else ("y" if "y" in keys else None)


def _check_npz(path: Path, model: dict[str, Any], section: str) -> None:
    """At plan time, from the arrays' headers (nothing is loaded): named after the inputs, numeric, as many
    samples in each, of the declared sizes and a type the input can take; labels one per sample, and
    present for evaluation."""
    key = f"{section}.path"
    arrays, labels = _npz_arrays(path, [i["name"] for i in model["inputs"]], section)
    headers = _headers(path, section)
    counts = {}
    for spec_ in model["inputs"]:
        shape, dtype = headers[arrays[spec_["name"]]]
        declared, wanted = spec_["shape"][1:], np.dtype(spec_["dtype"])
        where = f"{path.name}: input '{spec_['name']}'"
        if dtype.kind not in "biufc":
            raise MdbuildError(f"{where} holds {dtype} values", key, "save numeric arrays with numpy.savez (no Python objects)")
        if len(shape) != len(declared) + 1 or any(size != dim for size, dim in zip(shape[1:], declared) if isinstance(dim, int)) \
                or any(size > model["dims"][dim] for size, dim in zip(shape[1:], declared) if isinstance(dim, str)):
            raise MdbuildError(f"{where} has samples of shape {list(shape[1:])}; the model takes {declared} (model.dims: "
                               f"{model['dims']}; the first axis counts the samples)", key, "fix the data or model.inputs")
        if wanted.kind in "iub" and dtype.kind in "fc":
            raise MdbuildError(f"{where} holds {dtype} values; the input is {wanted}", key,
                               f"save the data as {wanted} (token ids, indices and masks are integers)")
        counts[spec_["name"]] = shape[0]
    if len(set(counts.values())) > 1:
        raise MdbuildError(f"{path.name}: the inputs hold different numbers of samples "
                           f"({', '.join(f'{n} {c}' for n, c in counts.items())})", key, "give every input the same samples, in the same order")
    if not next(iter(counts.values())):
        raise MdbuildError(f"the {section} data set {path.name} is empty", key, "give it at least one sample")
    if labels is not None and (len(headers[labels][0]) != 1 or headers[labels][0][0] != next(iter(counts.values()))):
        raise MdbuildError(f"{path.name}: labels of shape {list(headers[labels][0])} for {next(iter(counts.values()))} samples",
                           key, "give one label per sample, a 1-D array")
    if section == "evaluation" and labels is None:
        raise MdbuildError(f"{path.name} has no labels", key, "add an array named labels (or y): one class number per sample")


def _headers(path: Path, section: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} of an .npz's members (an .npy: under ""), read from their headers."""
    if _numpy_kind(path, section) == "npy":
        array = _open_npz(path, section)
        return {"": (array.shape, array.dtype)}
    found = {}
    with _open_npz(path, section) as archive:
        for name in archive.files:
            with archive.zip.open(f"{name}.npy") as member:
                version = np.lib.format.read_magic(member)
                readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version in readers:
                    shape, _, dtype = readers[version](member)
                else:  # a newer header: from the array itself
                    shape, dtype = archive[name].shape, archive[name].dtype
            found[name] = (shape, dtype)
    return found


def _numpy_kind(path: Path, section: str) -> str:
    """npz or npy, by the file's first bytes (whatever its name)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as exc:
        raise MdbuildError(f"cannot read {path}: {exc.strerror}", f"{section}.path", "point it at an .npz or .npy file") from exc
    if head.startswith(b"PK"):
        return "npz"
    if head == b"\x93NUMPY":
        return "npy"
    raise MdbuildError(f"{path} is neither an .npz (numpy.savez) nor an .npy (numpy.save) file", f"{section}.path",
                       "save the data with numpy.savez(path, <input name>=array, ...)")


def _open_npz(path: Path, section: str):
    """The archive, or for an .npy its array mapped (not read); a file numpy cannot read is the key's error."""
    try:
        return np.load(path, mmap_mode="r" if _numpy_kind(path, section) == "npy" else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise MdbuildError(f"{path} is not a numpy .npz or .npy file of arrays: {first_line(exc)}", f"{section}.path",
                           "save the data with numpy.savez(path, <input name>=array, ...)") from exc


def _from_npz(path: Path, names: list[str], section: str):
    arrays, labels = _npz_arrays(path, names, section)
    if arrays == {names[0]: ""}:  # an .npy: its one array is the input
        return {names[0]: np.asarray(_open_npz(path, section))}, None
    with _open_npz(path, section) as archive:
        try:
            return {name: archive[key] for name, key in arrays.items()}, archive[labels] if labels else None
        except ValueError as exc:  # an array of Python objects
            raise MdbuildError(f"{path}: {first_line(exc)}", f"{section}.path",
                               "save numeric arrays with numpy.savez (no Python objects)") from exc


def _image_files(folder: Path, samples: int | None, section: str) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: samples or None]
    if not files:
        raise MdbuildError(f"no {'/'.join(IMAGE_SUFFIXES)} files under {folder}", f"{section}.path", "point it at a folder of images")
    return files


def _from_images(folder: Path, names: list[str], data: dict[str, Any], preprocess: dict[str, Any], section: str):
    files = _image_files(folder, data["samples"], section)  # one input (validate)
    arrays = {names[0]: np.stack([load_image(p, preprocess) for p in files])}
    if section != "evaluation":
        return arrays, None
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if any(p.parent == folder for p in files) or any(p.parent.parent != folder for p in files):
        raise MdbuildError("evaluation images must sit in one sub-folder per class", f"{section}.path",
                           "arrange them as PATH/<class>/<image>")
    return arrays, [classes.index(p.parent.name) for p in files]


def _from_factory(data: dict[str, Any], names: list[str], section: str, workdir: Path):
    result = resolve_callable(data["factory"], workdir, f"{section}.factory")(**data["kwargs"])
    labels = None
    if isinstance(result, tuple) and len(result) == 2:
        result, labels = result
    if isinstance(result, dict):
        missing = set(names) - set(result)
        if missing:
            raise MdbuildError(f"the factory returned no arrays for inputs {sorted(missing)}", f"{section}.factory",
                               "return {input name: array} for every model input")
        return {name: _array_or_list(result[name]) for name in names}, labels
    if len(names) != 1:
        raise MdbuildError("the factory returned one array, the model has several inputs", f"{section}.factory",
                           "return {input name: array}")
    return {names[0]: _array_or_list(result)}, labels


def _array_or_list(value):
    """An array of samples, or a list of them where their lengths differ (sentences of varied length)."""
    return [np.asarray(item) for item in value] if isinstance(value, (list, tuple)) else np.asarray(value)


def _check_shapes(model: dict[str, Any], samples: list[Sample], key: str) -> None:
    """Every sample's fixed sizes as declared; a dynamic size (a sequence) anywhere from 1 to model.dims."""
    for spec_ in model["inputs"]:
        declared = spec_["shape"][1:]
        dtype = np.dtype(spec_["dtype"])
        for number, sample in enumerate(samples):
            array = sample[spec_["name"]]
            where = f"sample {number} of input '{spec_['name']}' has shape {list(array.shape)}"
            if array.ndim != len(declared) or any(size != dim for size, dim in zip(array.shape, declared)
                                                  if isinstance(dim, int)):
                raise MdbuildError(f"{where}; the model takes {declared} (a sample has no batch dimension)", key,
                                   "fix the data or its preprocessing")
            for size, dim in zip(array.shape, declared):
                if isinstance(dim, str) and not 1 <= size <= model["dims"][dim]:
                    raise MdbuildError(f"{where}: its {dim} {size} is outside 1..model.dims.{dim}={model['dims'][dim]}, "
                                       "the longest the model is built and verified for", key,
                                       f"shorten the samples, or raise model.dims.{dim}")
            if dtype.kind in "iub" and array.dtype.kind in "fc":  # casting would truncate 0.7 to 0
                raise MdbuildError(f"{where} holds {array.dtype} values; input '{spec_['name']}' is {dtype}", key,
                                   f"save the data as {dtype} (token ids, indices and masks are integers)")
            sample[spec_["name"]] = array.astype(dtype, copy=False)
