"""The verification samples and the source model's outputs on them (reference.npz), computed once
per recipe and shared by every target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from builder.inputs import make_inputs

REFERENCE_FILE = "reference.npz"


def verification_inputs(ctx) -> dict[str, np.ndarray]:
    """{input: array (samples, *input shape)}: real samples from the evaluation set when the recipe
    declares one (random inputs are out of distribution for a trained, quantized model), else seeded
    random ones."""
    model, verify = ctx.spec.model, ctx.spec.config["verify"]
    if ctx.spec.config["evaluation"]["source"]:
        from builder import data
        from builder.inputs import concrete_shape

        arrays, _ = data.load(ctx.spec, "evaluation")
        shapes = {i["name"]: concrete_shape(i, model["dims"], n) for n, i in enumerate(model["inputs"])}
        needed = verify["samples"] * shapes[model["inputs"][0]["name"]][0]
        if len(next(iter(arrays.values()))) >= needed:
            return {name: array[:needed].reshape([verify["samples"], *shapes[name]]) for name, array in arrays.items()}
    return make_inputs(model["inputs"], model["dims"], verify["samples"], verify["seed"])


def record_reference(ctx, out: Path, run) -> None:
    """Runs the source model (`run`: {input: array} -> {output: array}) on the verification samples,
    saves its outputs, and scores it on the labelled set when the recipe declares one."""
    from builder.evaluation import evaluate_source

    arrays = verification_inputs(ctx)
    names = ctx.spec.model["outputs"]
    count = len(next(iter(arrays.values())))
    outputs = []
    for index in range(count):
        ctx.progress(f"sample {index + 1}/{count}")
        result = run({name: array[index] for name, array in arrays.items()})
        outputs.append([result[name] for name in names if name in result])
    save_reference(ctx, out, arrays, outputs)
    evaluate_source(ctx, out, run)


def save_reference(ctx, out: Path, arrays: dict[str, np.ndarray], outputs: list[list[np.ndarray]]) -> None:
    names = ctx.spec.model["outputs"]
    if outputs and len(outputs[0]) != len(names):  # the model returned more or fewer tensors
        from builder.errors import MdbuildError

        raise MdbuildError(f"the model returns {len(outputs[0])} outputs but the recipe names {len(names)}: {names}",
                           "model.outputs", "list one name per model output")
    payload = {f"input/{name}": value for name, value in arrays.items()}
    for position, name in enumerate(names):
        payload[f"output/{name}"] = np.stack([sample[position] for sample in outputs])
    with open(out / REFERENCE_FILE, "wb") as handle:
        np.savez(handle, **payload)
    (out / "reference.json").write_text(json.dumps({"inputs": list(arrays), "outputs": names}))


def load_reference(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(directory / REFERENCE_FILE) as data:
        inputs = {key.split("/", 1)[1]: data[key] for key in data.files if key.startswith("input/")}
        outputs = {key.split("/", 1)[1]: data[key] for key in data.files if key.startswith("output/")}
    return inputs, outputs
