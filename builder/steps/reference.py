"""The reference step: the verification samples and the source model's outputs on them
(reference.npz), and its score on the labelled set; computed once per recipe, shared by every target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from builder import data
from builder.errors import MdbuildError
from builder.evaluation import evaluate_source
from builder.inputs import concrete_shape, make_inputs
from builder.sources import get_source

REFERENCE_FILE = "reference.npz"


def reads(config: dict[str, Any]) -> list[str]:
    keys = [*get_source(config["model"]).loads_with(config["model"]), "model.dims", "verify.samples", "verify.seed",
            "evaluation.source"]
    if config["evaluation"]["source"]:
        keys += ["evaluation.metric", "evaluation.output", *data.reads(config, "evaluation")]
    return keys


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    """Runs the source model on the verification samples, saves its outputs, and scores it on the
    labelled set when the recipe declares one."""
    model = get_source(ctx.config["model"]).runner(ctx)
    arrays = verification_inputs(ctx)
    names = ctx.config["model"]["outputs"]
    count = len(next(iter(arrays.values())))
    outputs = []
    for index in range(count):
        ctx.progress(f"sample {index + 1}/{count}")
        result = model({name: array[index] for name, array in arrays.items()})
        outputs.append([result[name] for name in names if name in result])
    _save(out, names, arrays, outputs)
    evaluate_source(ctx, out, model)


def verification_inputs(ctx) -> dict[str, np.ndarray]:
    """{input: array (samples, *input shape)}: real samples from the evaluation set when the recipe
    declares one (random inputs are out of distribution for a trained, quantized model), else seeded
    random ones."""
    model, verify = ctx.config["model"], ctx.config["verify"]
    if ctx.config["evaluation"]["source"]:
        arrays, _ = data.load(ctx.config, ctx.paths, "evaluation", ctx.workdir)
        shapes = {i["name"]: concrete_shape(i, model["dims"], n) for n, i in enumerate(model["inputs"])}
        needed = verify["samples"] * shapes[model["inputs"][0]["name"]][0]
        if len(next(iter(arrays.values()))) >= needed:
            return {name: array[:needed].reshape([verify["samples"], *shapes[name]]) for name, array in arrays.items()}
    return make_inputs(model["inputs"], model["dims"], verify["samples"], verify["seed"])


def _save(out: Path, names: list[str], arrays: dict[str, np.ndarray], outputs: list[list[np.ndarray]]) -> None:
    if outputs and len(outputs[0]) != len(names):  # the model returned more or fewer tensors
        raise MdbuildError(f"the model returns {len(outputs[0])} outputs but the recipe names {len(names)}: {names}",
                           "model.outputs", "list one name per model output")
    payload = {f"input/{name}": value for name, value in arrays.items()}
    for position, name in enumerate(names):
        payload[f"output/{name}"] = np.stack([sample[position] for sample in outputs])
        _check_finite(name, payload[f"output/{name}"])
    with open(out / REFERENCE_FILE, "wb") as handle:
        np.savez(handle, **payload)
    (out / "reference.json").write_text(json.dumps({"inputs": list(arrays), "outputs": names}))


def load_reference(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(directory / REFERENCE_FILE) as archive:
        inputs = {key.split("/", 1)[1]: archive[key] for key in archive.files if key.startswith("input/")}
        outputs = {key.split("/", 1)[1]: archive[key] for key in archive.files if key.startswith("output/")}
    return inputs, outputs


def _check_finite(name: str, values: np.ndarray) -> None:
    """NaN or Inf from the source model would be blamed on every artifact compared with it."""
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise MdbuildError(f"the source model's output '{name}' has NaN or Inf values on the verification inputs",
                           "model.inputs", "check the inputs' value ranges (model.inputs[i].low/high for integers, "
                           "e.g. an attention mask must be 0 or 1) and the model itself")
