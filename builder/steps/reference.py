"""The reference step: the verification samples and the source model's outputs on them
(reference.npz), and its score on the labelled set; computed once per recipe, shared by every target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from builder import cases, data
from builder.errors import MdbuildError, first_line
from builder.evaluation import evaluate_source
from builder.inputs import batch_dim, random_samples
from builder.samples import Sample, describe_feed
from builder.serving.accuracy import read_cases
from builder.sources import get_source

REFERENCE_FILE = "reference.npz"


def reads(config: dict[str, Any]) -> list[str]:
    keys = [*get_source(config["model"]).loads_with(config["model"]), "model.inputs", "model.dims", "verify.source",
            "verify.samples", "verify.seed", "verify.sizes", "evaluation.source"]
    # auto decides by the calibration set's source only where no evaluation set is declared
    keys += ["calibration.source"] if config["verify"]["source"] == "auto" and not config["evaluation"]["source"] else []
    keys += [] if data.random_verification(config) else data.reads(config, data.verification_section(config))
    if config["evaluation"]["source"]:
        keys += ["evaluation.metric", "evaluation.output", *data.reads(config, "evaluation")]
    return keys


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    """Runs the source model on the verification cases, saves its outputs, and scores it on the
    labelled set when the recipe declares one."""
    model = get_source(ctx.config["model"]).runner(ctx)
    found = verification_samples(ctx)
    built = cases.build(found, ctx.config["model"], ctx.config["verify"])
    names = ctx.config["model"]["outputs"]
    payload = {}
    for index, case in enumerate(built):
        ctx.progress(f"case {index + 1}/{len(built)}: {case['name']}")
        result = _outputs(model, case, ctx.config["model"]["inputs"])
        if set(names) != set(result):  # an output left unnamed would be served under an exporter's made-up name
            raise MdbuildError(f"the model returns {len(result)} outputs ({', '.join(result)}) but the recipe names "
                               f"{len(names)}: {names}", "model.outputs", "list one name per model output, in order")
        for name in names:
            _check_finite(name, result[name], case["name"])
            payload[f"{index}/output/{name}"] = result[name]
        payload.update({f"{index}/input/{name}": value for name, value in case["feeds"].items()})
    with open(out / REFERENCE_FILE, "wb") as handle:
        np.savez(handle, **payload)
    (out / "reference.json").write_text(json.dumps({
        "inputs": [i["name"] for i in ctx.config["model"]["inputs"]], "outputs": names,
        "data": _described(ctx.config), "random": data.random_verification(ctx.config), "section": data.verification_section(ctx.config), "samples": len(found), "cases": [{key: c[key] for key in ("name", "kind", "perturbs")} for c in built]}))
    evaluate_source(ctx, out, model)


def _outputs(model, case: dict[str, Any], specs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The source model's outputs on one case; where the model rejects the inputs (a token id past its
    vocabulary, a shape it does not take), one line that shows what it was given."""
    try:
        return model(case["feeds"])
    except MdbuildError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # the user's model raised: its message, and the inputs it was given
        given = ", ".join(describe_feed(spec["name"], case["feeds"][spec["name"]]) for spec in specs)
        raise MdbuildError(f"the source model failed on verification case '{case['name']}' ({given}): "
                           f"{type(exc).__name__}: {first_line(exc)}", "model.inputs",
                           "check each input's shape, dtype and low/high (token ids below the vocabulary size) "
                           "against what the model takes") from exc


def verification_samples(ctx) -> list[Sample]:
    """At most verify.samples samples of the recipe's verification data (verify.source)."""
    model, verify = ctx.config["model"], ctx.config["verify"]
    if data.random_verification(ctx.config):
        batch = batch_dim(model["inputs"])
        lengths = {dim: values for dim, values in cases.sizes(model, verify).items() if dim != batch}
        return random_samples(model["inputs"], model["dims"], verify["samples"], verify["seed"], lengths)
    found, _ = data.load(ctx.config, ctx.paths, data.verification_section(ctx.config), ctx.workdir)
    return found[: verify["samples"]]


def _described(config: dict[str, Any]) -> str:
    if data.random_verification(config):
        return f"seeded random inputs (verify.seed={config['verify']['seed']})"
    section = data.verification_section(config)
    return f"the {section if section != 'verify' else 'verification'} data ({config[section]['source']})"


def load_reference(directory: Path) -> tuple[list[dict[str, dict[str, np.ndarray]]], dict[str, Any]]:
    """([{"input": {...}, "output": {...}}] per case, reference.json)."""
    with np.load(directory / REFERENCE_FILE) as archive:
        found = read_cases(archive)
    return found, json.loads((directory / "reference.json").read_text())


def _check_finite(name: str, values: np.ndarray, case: str) -> None:
    """NaN or Inf from the source model would be blamed on every artifact compared with it."""
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise MdbuildError(f"the source model's output '{name}' has NaN or Inf values on the verification inputs "
                           f"({case})",
                           "model.inputs", "check the inputs' value ranges (model.inputs[i].low/high for integers, "
                           "e.g. an attention mask must be 0 or 1) and the model itself")
