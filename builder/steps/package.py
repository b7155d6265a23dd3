"""Assemble the deployment artifact: model, manifest, pinned requirements, serve.py, README, report."""

from __future__ import annotations

import importlib.util
import json
import shutil
import zlib
from pathlib import Path

from backends import get_backend
from builder import __version__
from builder.hashing import list_files, sha256_file
from builder.render import render
from builder.steps.compile import RUNTIME_FILE, load_settings
from builder.steps.reference import REFERENCE_FILE
from builder.steps.verify import REPORT_FILE
from builder.transforms.record import RECORD_FILE, read_record
from builder.versions import host_fingerprint, library_version

MANIFEST_SCHEMA = 1
MANIFEST_FILE = "manifest.json"
_V2 = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64", "int32": "INT32",
       "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}


def run(ctx, inputs: dict[str, Path], out: Path) -> None:
    spec = ctx.spec
    backend = get_backend(spec.target["backend"])
    settings = load_settings(inputs["compiled"])
    shutil.copytree(inputs["compiled"], out / "model", ignore=shutil.ignore_patterns(RUNTIME_FILE, RECORD_FILE))
    shutil.copyfile(inputs["reference"] / REFERENCE_FILE, out / "samples.npz")
    report = _final_report(inputs, out / "model")
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True))
    model = backend.runtime().load(out / "model", settings)
    tensors = {kind: [{"name": name, "datatype": _V2.get(dtype, dtype), "shape": [-1 if d is None else d for d in dims]}
                      for name, (dtype, dims) in getattr(model, kind).items()] for kind in ("inputs", "outputs")}
    values = {
        "mdbuild_version": __version__, "recipe": spec.recipe, "target": spec.target["name"],
        "backend": backend.name, "precision": spec.target["precision"], "build_key": ctx.key,
        "report": report, "host": host_fingerprint(), **tensors,
        "example_request": json.dumps(_example_request(tensors["inputs"])),
    }
    runtime_source = Path(importlib.util.find_spec(backend.runtime_module).origin).read_text()
    (out / "serve.py").write_text(render("serve.py.j2", runtime_source=runtime_source, **values))
    (out / "README.md").write_text(render("README.md.j2", **values))
    (out / "report.md").write_text(render("report.md.j2", **values))
    requirements = [f"numpy=={library_version('numpy')}", f"{backend.distribution}=={library_version(backend.distribution)}"]
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "mdbuild": __version__,
        "recipe": spec.recipe,
        "target": spec.target["name"],
        "build_key": ctx.key,
        "config": spec.artifact_config,
        "steps": {step_id: {"key": result.key, "digest": result.entry.digest, "libraries": result.description["libraries"]}
                  for step_id, result in ctx.results.items()}
                 | {"package": {"key": ctx.key, "libraries": ctx.description["libraries"]}},
        "libraries": _all_libraries(ctx),
        "runtime": settings,
        "host": host_fingerprint(),
        "verification": {"passed": report["passed"], "latency_p50_ms": report["latency"]["p50_ms"]},
        "files": {str(rel): sha256_file(out / rel) for rel in list_files(out)},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _final_report(inputs: dict[str, Path], model_dir: Path) -> dict:
    """Verification, plus what the optimization steps did, the model's size, and warnings."""
    report = json.loads((inputs["report"] / REPORT_FILE).read_text())
    records = [r for r in (read_record(path) for name, path in inputs.items() if name not in _NOT_STEPS) if r]
    report["optimizations"] = records
    raw = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    compressed = sum(len(zlib.compress(p.read_bytes(), 6)) for p in model_dir.rglob("*") if p.is_file())
    report["size"] = {"model_bytes": raw, "compressed_bytes": compressed}
    report["warnings"] = [
        f"{r['step']} was calibrated on RANDOM data (calibration.source=random): its int8 accuracy on real inputs is unproven"
        for r in records if r.get("random_calibration")
    ]
    return report


_NOT_STEPS = ("compiled", "report", "reference", "export")


def _all_libraries(ctx) -> dict[str, str | None]:
    libraries: dict[str, str | None] = {"mdbuild": __version__}
    for result in ctx.results.values():
        libraries.update(result.description["libraries"])
    libraries.update(ctx.description["libraries"])
    return dict(sorted(libraries.items()))


def _example_request(inputs: list[dict]) -> dict:
    tensors = []
    for tensor in inputs:
        shape = [1 if d == -1 else d for d in tensor["shape"]]
        count = 1
        for size in shape:
            count *= size
        data = [0] * count if count <= 16 else f"<{count} values, row-major>"
        tensors.append({"name": tensor["name"], "shape": shape, "datatype": tensor["datatype"], "data": data})
    return {"inputs": tensors}
