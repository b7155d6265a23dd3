"""Assemble the deployment artifact: model, manifest, pinned requirements, serve.py, README, report."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from backends import get_backend, torchserve
from builder import __version__, monitoring
from builder.hashing import list_files, sha256_file
from builder.inputs import batch_dim
from builder.optimize.summary import SUMMARY_FILE, read_summary
from builder.render import render
from builder.samples import role, value_range
from builder.serving import SERVING_DIR
from builder.serving.host import host_fingerprint
from builder.serving.protocol import V2_NAMES
from builder.steps import REPORT_FILE, REPORT_PAGE
from builder.steps.compile import RUNTIME_FILE, load_settings
from builder.steps.reference import REFERENCE_FILE
from builder.steps.verify import OUTPUTS_FILE, VERDICT_FILE
from builder.triton import config_pbtxt
from builder.versions import library_version

MANIFEST_SCHEMA = 2
MANIFEST_FILE = "manifest.json"
_SERVER_DEFAULTS = ("max_batch_size", "max_queue_delay_ms", "max_body_bytes", "allow_nonfinite", "top_k", "scores",
                    "monitoring", "drift_window")


def reads(config: dict[str, Any]) -> list[str]:
    """The labels file is an input of its own (its path is not read); with labels, the server's image
    route applies the recipe's preprocessing."""
    keys = ["target.name", "target.backend", "target.precision", "model.inputs", "model.dims",
            *(f"serving.{key}" for key in config["serving"] if key != "labels")]
    return keys + (["preprocess"] if config["serving"]["labels"] else []) + monitoring.reads(config)


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    config, target = ctx.config, ctx.config["target"]
    recipe = config["recipe"]
    backend = get_backend(target["backend"])
    model_dir = Path("model_repository") / recipe / "1"  # also a Triton model repository
    settings = {**load_settings(inputs["compiled"]), "model_dir": str(model_dir)}
    shutil.copytree(inputs["compiled"], out / model_dir, ignore=shutil.ignore_patterns(RUNTIME_FILE, SUMMARY_FILE))
    _write_samples(inputs, out / "samples.npz")
    # What each engine runs on, and the build deferred to the GPU host (backends that build engines).
    report = {**_final_report(inputs, out / model_dir), "recipe": recipe,
              **{key: settings[key] for key in ("engines", "deferred", "profiles", "notes") if key in settings}}
    verdict = json.loads((inputs["report"] / VERDICT_FILE).read_text())
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True))
    model, _, _ = backend.load_here(out / model_dir, settings)
    serving = config["serving"]
    labels = "labels" in ctx.paths
    triton = backend.triton_for(settings)
    if triton:
        (out / model_dir.parent / "config.pbtxt").write_text(
            config_pbtxt(recipe, triton, model.inputs, model.outputs, settings, serving))
    _write_server(ctx, backend, out)
    if labels:
        shutil.copyfile(ctx.paths["labels"], out / "labels.txt")
    # Beside the labels a handler may ship; with the request contract serve.py enforces.
    with_requests = {**config, "requests": _request_contract(config["model"])}
    backend.write_serving_files(out, str(model_dir), settings, with_requests)
    archive = torchserve.wanted(backend, serving)
    if archive:
        torchserve.write(out, str(model_dir), settings, with_requests, _runtime_file(backend))
    watched = monitoring.write(out, model, inputs, with_requests, ctx.progress) if serving["monitoring"] else None
    masks = {spec["name"] for spec in config["model"]["inputs"] if role(spec) == "mask"}
    tensors = {kind: [{"name": name, "datatype": V2_NAMES.get(dtype, dtype), "shape": [-1 if d is None else d for d in dims]}
                      for name, (dtype, dims) in getattr(model, kind).items()] for kind in ("inputs", "outputs")}
    values = {
        "mdbuild_version": __version__, "recipe": recipe, "target": target["name"],
        "backend": backend.name, "precision": target["precision"], "build_key": ctx.key,
        "report": report, "host": host_fingerprint(), "model_dir": str(model_dir), "labels": labels,
        **tensors, "example_request": json.dumps(_example_request(tensors["inputs"], masks)), "monitoring": bool(watched),
        "torchserve": archive, "without_drift_alerts": watched and watched["without_drift_alerts"],
        "classes": bool(watched) and any("class_shares" in stats for stats in watched["outputs"].values()),
    }
    (out / "README.md").write_text(render("README.md.j2", **values))
    (out / REPORT_PAGE).write_text(render("report.md.j2", **values))
    requirements = ["numpy", *backend.pinned] + (["pillow"] if labels else [])
    (out / "requirements.txt").write_text("".join(f"{name}=={library_version(name)}\n" for name in requirements)
                                          + "".join(f"{spec}\n" for spec in backend.ranges))
    # Optional (grpcio is ~19 MB): serve.py --grpc-port needs it; pinned where this host has it.
    (out / "requirements-grpc.txt").write_text("".join(f"{name}=={library_version(name)}\n" if library_version(name)
                                                       else f"{name}\n" for name in ("grpcio", "protobuf")))
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "mdbuild": __version__,
        "recipe": recipe,
        "target": target["name"],
        "build_key": ctx.key,
        "config": _shaping_config(ctx),
        "steps": {step_id: {"key": result.key, "digest": result.entry.digest, "libraries": result.description["libraries"]}
                  for step_id, result in ctx.results.items()}
                 | {"package": {"key": ctx.key, "libraries": ctx.description["libraries"]}},
        "libraries": _all_libraries(ctx),
        "runtime": settings,
        "requests": _request_contract(config["model"]),
        "host": host_fingerprint(),
        "verification": {"passed": verdict["passed"],
                         "tolerance": {"level": verdict["tolerance_level"], **verdict["tolerance"]},
                         "compute": verdict["compute"], "limits_by_compute": verdict["limits_by_compute"],
                         "proxy": verdict["proxy"], "pending": verdict["pending"]},
        # The reports are not integrity-checked by serve.py: they say how fast this build ran, not what it is.
        "files": {str(rel): sha256_file(out / rel) for rel in list_files(out) if str(rel) not in ctx.node.reports},
        "reports": list(ctx.node.reports),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _write_samples(inputs: dict[str, Path], path: Path) -> None:
    """The verification cases: inputs, the source model's outputs and the artifact's own (for --selftest)."""
    with np.load(inputs["reference"] / REFERENCE_FILE) as reference, np.load(inputs["report"] / OUTPUTS_FILE) as outputs:
        arrays = {key: reference[key] for key in reference.files}
        arrays.update({key: outputs[key] for key in outputs.files})
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _write_server(ctx, backend, out: Path) -> None:
    """serve.py and the serving package beside it: the server modules and the backend's runtime."""
    package = out / "serving"
    package.mkdir()
    for source in sorted(SERVING_DIR.glob("*.py")):
        shutil.copyfile(source, package / source.name)
    shutil.copyfile(_runtime_file(backend), package / "runtime.py")
    defaults = {key: ctx.config["serving"][key] for key in _SERVER_DEFAULTS}
    (out / "serve.py").write_text(render("serve.py.j2", mdbuild_version=__version__, recipe=ctx.config["recipe"],
                                         target=ctx.config["target"]["name"], build_key=ctx.key, defaults=defaults))


def _runtime_file(backend) -> Path:
    """The backend's standalone loader, shipped as runtime.py."""
    return Path(importlib.util.find_spec(backend.runtime_module).origin)


def _final_report(inputs: dict[str, Path], model_dir: Path) -> dict:
    """Verification, plus what the optimization steps did, the model's size, and warnings."""
    report = json.loads((inputs["report"] / REPORT_FILE).read_text())
    summaries = [r for r in (read_summary(path) for name, path in inputs.items() if name not in _NOT_STEPS) if r]
    report["optimizations"] = summaries
    raw = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    compressed = sum(len(zlib.compress(p.read_bytes(), 6)) for p in model_dir.rglob("*") if p.is_file())
    report["size"] = {"model_bytes": raw, "compressed_bytes": compressed}
    report["warnings"] = [  # the build's own first, then what verification found
        f"{r['step']} was calibrated on RANDOM data (calibration.source=random): its int8 accuracy on real inputs is unproven"
        for r in summaries if r.get("random_calibration")
    ] + report.get("warnings", [])
    return report


_NOT_STEPS = ("compiled", "report", "reference")


def _shaping_config(ctx) -> dict[str, Any]:
    """The config that shaped the artifact: what its steps read (their node configs, merged)."""
    merged: dict[str, Any] = {}
    for config in [result.description["config"] for result in ctx.results.values()] + [ctx.config]:
        _merge(merged, config)
    return merged


def _merge(into: dict[str, Any], config: dict[str, Any]) -> None:
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _all_libraries(ctx) -> dict[str, str | None]:
    libraries: dict[str, str | None] = {"mdbuild": __version__}
    for result in ctx.results.values():
        libraries.update(result.description["libraries"])
    libraries.update(ctx.description["libraries"])
    return dict(sorted(libraries.items()))


def _request_contract(model: dict[str, Any]) -> dict[str, Any]:
    """What serve.py checks in a request beyond the runtime's shapes: each integer input's value range
    (as declared; 0 and 1 for a mask), the dimensions inputs share by name, and the longest sequence
    (model.dims of a dynamic dimension of an integer input: what the build exported and verified)."""
    batch = batch_dim(model["inputs"])
    ranges = {}
    for spec in model["inputs"]:
        declared = (spec["low"], spec["high"])
        if np.dtype(spec["dtype"]).kind in "iu" and (declared != (None, None) or role(spec) == "mask"):
            ranges[spec["name"]] = list(value_range(spec)) if role(spec) == "mask" else list(declared)
    return {"ranges": ranges,
            "dims": {spec["name"]: [d if isinstance(d, str) else None for d in spec["shape"]] for spec in model["inputs"]},
            # sequences (dimensions of integer inputs): longer ones reach positions the model may not have
            "longest": {d: model["dims"][d] for spec in model["inputs"] if np.dtype(spec["dtype"]).kind in "iub"
                        for d in spec["shape"] if isinstance(d, str) and d != batch}}


def _example_request(inputs: list[dict], masks: set[str]) -> dict:
    """A request of zeros, and ones in the masks (a mask of zeros leaves no real position: NaN from most models)."""
    tensors = []
    for tensor in inputs:
        shape = [1 if d == -1 else d for d in tensor["shape"]]
        count = 1
        for size in shape:
            count *= size
        data = [int(tensor["name"] in masks)] * count if count <= 16 else f"<{count} values, row-major>"
        tensors.append({"name": tensor["name"], "shape": shape, "datatype": tensor["datatype"], "data": data})
    return {"inputs": tensors}
