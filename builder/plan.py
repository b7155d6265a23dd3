"""BuildSpec -> DAG of steps. Pure: reads no file contents and imports no ML SDK.

[prune] ─> export ─> [simplify, fp16, ort_quantize ...] ─> compile ─> [nncf_quantize] ─> verify ─> package
reference (source outputs on the seeded samples and the labelled set) ──────────────────────^
calibration (data for the quantization steps) ──> the steps that calibrate
reference and calibration depend only on the recipe: every target of a sweep shares them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import get_backend
from builder import __version__
from builder.data import data_files
from builder.errors import MdbuildError
from builder import serving as serving_package
from builder.resources import resource_dir
from builder.sources import factory_libraries, get_source, local_code, source_files
from builder.spec import BuildSpec
from builder.steps import REPORT_FILE, REPORT_PAGE
from builder.transforms import lossiest, resolve_transforms, verification_level

# Keys of the model section that change the exported ONNX graph / the reference outputs.
_EXPORT_KEYS = ("source", "factory", "kwargs", "seed", "inputs", "outputs", "dims", "opset", "exporter")
_REFERENCE_KEYS = ("source", "factory", "kwargs", "seed", "inputs", "outputs", "dims")


@dataclass(frozen=True)
class StepNode:
    id: str
    run: str  # "module:function" of the implementation
    version: int
    config: dict[str, Any]  # exactly the configuration the step reads
    upstream: dict[str, str] = field(default_factory=dict)  # input name -> step id
    files: dict[str, Path] = field(default_factory=dict)  # input name -> source file or directory
    libraries: tuple[str, ...] = ()
    extra_versions: dict[str, str | None] = field(default_factory=dict)
    host_dependent: bool = False
    reports: tuple[str, ...] = ()  # output files that report this run (latency): kept, not in its digest
    shared: bool = False  # the same for every target of the recipe (slot ignores the target)
    isolated: bool = False  # runs in a fresh process (see builder.execute)


@dataclass(frozen=True)
class Plan:
    spec: BuildSpec
    steps: tuple[StepNode, ...]

    def slot(self, node: StepNode) -> str:
        target = "" if node.shared else f"/{self.spec.target['name']}"
        return f"{self.spec.recipe}{target}/{node.id}"


def _pick(section: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: section[key] for key in keys if key in section}


def make_plan(spec: BuildSpec) -> Plan:
    config, model, target = spec.config, spec.model, spec.target
    source = get_source(model)
    backend = get_backend(target["backend"])
    if target["precision"] not in backend.precisions:
        raise MdbuildError(f"{backend.name} does not build precision '{target['precision']}'", "target.precision",
                           f"choose one of: {', '.join(backend.precisions)}")
    precision = backend.precisions[target["precision"]]
    transforms = resolve_transforms(config)
    files = source_files(spec)
    code_versions = factory_libraries(model, spec.workdir)
    steps: list[StepNode] = []
    by_stage = {stage: [t for t in transforms if t.stage == stage] for stage in ("torch", "onnx", "compiled")}

    def transform_node(transform, upstream: dict[str, str]) -> StepNode:
        if transform.uses_calibration(config):
            upstream = {**upstream, "calibration": "calibration"}
        section = {transform.section: config[transform.section]} if transform.section else {}
        return StepNode(id=transform.name, run=transform.run, version=transform.version,
                        config={**section, "model": _pick(model, ("inputs", "outputs", "dims"))},
                        upstream=upstream, libraries=transform.libraries, isolated=transform.isolated)

    if any(t.uses_calibration(config) for t in transforms):
        calibration = config["calibration"]
        if calibration["source"] is None:
            raise MdbuildError(
                f"{'/'.join(t.name for t in transforms if t.calibrated)} needs calibration data and the recipe declares none",
                "calibration.source", "declare npz, images or factory data; calibration.source=random opts in to "
                "random inputs, which the report then flags")
        steps.append(StepNode(
            id="calibration", run="builder.steps.calibration:run", version=1,
            config={"calibration": calibration, "model": _pick(model, ("inputs", "dims", "seed")),
                    "preprocess": config["preprocess"] if calibration["source"] == "images" else None},
            files=data_files(spec, "calibration"), libraries=("numpy", "pillow"),
            extra_versions=_data_code_versions(calibration, spec), shared=True,
        ))
    export_upstream: dict[str, str] = {}
    for transform in by_stage["torch"]:
        steps.append(StepNode(
            id=transform.name, run=transform.run, version=transform.version,
            config={"model": _pick(model, _EXPORT_KEYS), transform.section: config[transform.section]},
            files=files, libraries=transform.libraries, extra_versions=code_versions, shared=True,
        ))
        export_upstream = {"pruned": transform.name}
    steps.append(StepNode(
        id="export", run=source.export, version=1, config={"model": _pick(model, _EXPORT_KEYS)},
        upstream=export_upstream, files=files, libraries=source.libraries, extra_versions=code_versions,
        shared=not export_upstream, isolated=source.isolated,
    ))
    evaluation = config["evaluation"]
    steps.append(StepNode(
        id="reference", run=source.reference, version=1,
        config={"model": _pick(model, _REFERENCE_KEYS), "verify": _pick(config["verify"], ("samples", "seed")),
                "evaluation": {k: v for k, v in evaluation.items() if k != "max_drop"} if evaluation["source"] else None,
                "preprocess": config["preprocess"] if evaluation["source"] == "images" else None},
        files={**files, **data_files(spec, "evaluation"), **_metric_code(spec)}, libraries=source.libraries + ("numpy",),
        extra_versions={**code_versions, **_data_code_versions(evaluation, spec)}, shared=True,
        isolated=source.isolated,
    ))
    previous = "export"
    for transform in by_stage["onnx"]:
        steps.append(transform_node(transform, {"model": previous}))
        previous = transform.name
    steps.append(StepNode(
        id="compile", run="builder.steps.compile:run", version=backend.compile_version,
        config={"target": _pick(target, ("backend", "precision", "graph_optimization")),
                "hardware": config["hardware"]},
        upstream={"model": previous}, files=_compile_code(backend), libraries=backend.libraries,
        isolated="compile" in backend.isolated,
    ))
    previous = "compile"
    for transform in by_stage["compiled"]:
        steps.append(transform_node(transform, {"compiled": previous}))
        previous = transform.name
    level = verification_level(config, transforms, precision.stores)
    steps.append(StepNode(
        id="verify", run="builder.steps.verify:run", version=1,
        config={"target": _pick(target, ("name", "precision")), "level": level,
                "verify": {**config["verify"], "tolerances": _tolerances(config, level, precision.computes)},
                "evaluation": _pick(evaluation, ("metric", "output", "max_drop")) if evaluation["source"] else None},
        upstream={"compiled": previous, "reference": "reference"}, files=_metric_code(spec),
        libraries=backend.libraries + ("numpy",), host_dependent=True, reports=(REPORT_FILE,),
        isolated="verify" in backend.isolated,
    ))
    steps.append(StepNode(
        id="package", run="builder.steps.package:run", version=1,
        config={"recipe": spec.recipe, "mdbuild": __version__, **spec.artifact_config},
        upstream={"compiled": previous, "report": "verify", "reference": "reference", "export": "export",
                  **{t.name: t.name for t in transforms}},
        files={**data_files(spec, "serving"), **_shipped_code(backend)},
        libraries=("jinja2", "numpy", "pillow", backend.distribution),
        host_dependent=True, reports=(REPORT_FILE, REPORT_PAGE), isolated="package" in backend.isolated,
    ))
    return Plan(spec, tuple(steps))


def _tolerances(config: dict[str, Any], level: str, computes: tuple[str, ...]) -> dict[str, Any]:
    """The limits verification may apply: of the level the build stores and, where the runtime may
    compute in a lossier precision (bf16, or fp16 on a CPU with f16 arithmetic), of that one."""
    limits = config["verify"]["tolerances"]
    needed = sorted({lossiest([level, computed]) for computed in computes} | {level})
    for name in needed:
        if name not in limits:
            raise MdbuildError(f"no tolerances for level '{name}'", f"verify.tolerances.{name}",
                               "add max_rel_l2 / min_cosine limits for it (conf/verify/default.yaml has defaults)")
    return {name: limits[name] for name in needed}


def _compile_code(backend) -> dict[str, Path]:
    """The backend's package (compile and runtime) and the shared converter helpers: editing them
    rebuilds the compiled model."""
    package = Path(importlib.util.find_spec(backend.runtime_module).origin).parent
    return {"backend_code": package, "converter_code": package.parent / "onnx_graph.py"}


def _shipped_code(backend) -> dict[str, Path]:
    """The code the package step copies into the artifact: the server, the runtime, the templates."""
    return {"serving_code": Path(serving_package.__file__).parent,
            "runtime_code": Path(importlib.util.find_spec(backend.runtime_module).origin),
            "templates": resource_dir("templates")}


def _metric_code(spec: BuildSpec) -> dict[str, Path]:
    evaluation = spec.config["evaluation"]
    if not evaluation["source"] or evaluation["metric"] == "top1":
        return {}
    code = local_code(evaluation["metric"], spec.workdir)
    return {"metric_code": code} if code else {}


def _data_code_versions(data: dict[str, Any], spec: BuildSpec) -> dict[str, str | None]:
    if data["source"] != "factory" or not data["factory"]:
        return {}
    return factory_libraries({"source": "pytorch", "factory": data["factory"]}, spec.workdir)
