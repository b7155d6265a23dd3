"""BuildSpec -> DAG of steps. Pure: reads no file contents and imports no ML SDK. Each node's config is
exactly the keys its step reads (builder.reads); reference and calibration depend only on the recipe,
so every target of a sweep shares them (the README's "The build" draws the DAG)."""

from __future__ import annotations

import importlib

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import all_backends, get_backend, torchserve
from builder import __version__
from builder.code import Code, factory_code, module_code
from builder.data import data_inputs, random_verification, verification_section
from builder.errors import MdbuildError
from builder.optimize import STAGES, lossiest, resolve_optimizations, verification_level
from builder.reads import select
from builder.resources import resource_dir
from builder.serving import SERVING_DIR
from builder.sources import get_source, source_inputs
from builder.spec import BuildSpec
from builder.steps import REPORT_FILE, REPORT_PAGE, calibration, compile as compile_step, package, reference, verify


@dataclass(frozen=True)
class StepNode:
    id: str
    run: str  # "module:function" of the implementation
    version: int
    config: dict[str, Any]  # the keys the step reads (`reads`), selected from the resolved config
    reads: tuple[str, ...] = ()
    upstream: dict[str, str] = field(default_factory=dict)  # input name -> step id
    files: dict[str, Path] = field(default_factory=dict)  # input name -> source file or directory
    libraries: tuple[str, ...] = ()
    extra_versions: dict[str, str | None] = field(default_factory=dict)
    host_dependent: bool = False
    host: str | None = None  # "module:function" of the host facts its output depends on (None: the CPU's)
    reports: tuple[str, ...] = ()  # output files that report this run (latency): kept, not in its digest
    embeds_keys: bool = False  # writes the keys of the steps before it into its output (the manifest)
    shared: bool = False  # the same for every target of the recipe (slot ignores the target)
    isolated: bool = False  # runs in a fresh process (see builder.execute)


@dataclass(frozen=True)
class Plan:
    spec: BuildSpec
    steps: tuple[StepNode, ...]

    def slot(self, node: StepNode) -> str:
        target = "" if node.shared else f"/{self.spec.target['name']}"
        return f"{self.spec.recipe}{target}/{node.id}"


def _reading(config: dict[str, Any], keys) -> dict[str, Any]:
    """A node's `config` and `reads` from the keys its step declares."""
    reads = tuple(keys)
    return {"config": select(config, reads), "reads": reads}


def make_plan(spec: BuildSpec) -> Plan:
    config, target = spec.config, spec.target
    source = get_source(spec.model)
    backend = get_backend(target["backend"])
    if target["precision"] not in backend.precisions:
        raise MdbuildError(f"{backend.name} does not build precision '{target['precision']}'", "target.precision",
                           f"choose one of: {', '.join(backend.precisions)}")
    precision = backend.precisions[target["precision"]]
    optimizations = resolve_optimizations(config, backend, all_backends())
    files, code = source_inputs(spec)
    steps: list[StepNode] = []
    by_stage = {stage: [step for step in optimizations if step.stage == stage] for stage in STAGES}

    def optimization_node(step, upstream: dict[str, str], **extra) -> StepNode:
        if step.uses_calibration(config):
            upstream = {**upstream, "calibration": "calibration"}
        # A backend's own step: its module's files (mdbuild's generic steps are versioned instead).
        own = module_code(step.module, step.name) if step.module.startswith("backends.") else Code()
        files = {**own.files, **extra.pop("files", {})}
        return StepNode(id=step.name, run=step.run, version=step.version, **_reading(config, step.reads(config)),
                        upstream=upstream, files=files, libraries=step.libraries, isolated=step.isolated, **extra)

    if any(step.uses_calibration(config) for step in optimizations):
        if config["calibration"]["source"] is None:
            raise MdbuildError(
                f"{'/'.join(s.name for s in optimizations if s.calibrated)} needs calibration data and the recipe "
                "declares none",
                "calibration.source", "declare npz, images or factory data; calibration.source=random opts in to "
                "random inputs, which the report then flags")
        data_files, data_code = data_inputs(spec, "calibration")
        steps.append(StepNode(
            id="calibration", run="builder.steps.calibration:run", version=4,  # 4: random sequences of varied lengths
            **_reading(config, calibration.reads(config)), files={**data_files, **data_code.files},
            libraries=("numpy", "pillow"), extra_versions=data_code.versions, shared=True,
        ))
    export_upstream: dict[str, str] = {}
    for step in by_stage["torch"]:
        steps.append(optimization_node(step, {}, files={**files, **code.files}, extra_versions=code.versions,
                                       shared=True))
        export_upstream = {"pruned": step.name}
    steps.append(StepNode(
        id="export", run=source.export, version=2,
        **_reading(config, (*source.loads_with(spec.model), *source.export_keys)),
        upstream=export_upstream,
        files={**files, **code.files}, libraries=source.libraries, extra_versions=code.versions,
        shared=not export_upstream, isolated=source.isolated,
    ))
    evaluation_files, evaluation_code = data_inputs(spec, "evaluation")
    verification_files, verification_code = ({}, Code()) if random_verification(config) else \
        data_inputs(spec, verification_section(config))
    metric = _metric_code(spec)
    reference_code = code | evaluation_code | verification_code | metric
    images = "images" in (config["evaluation"]["source"], config[verification_section(config)]["source"])
    steps.append(StepNode(
        id="reference", run="builder.steps.reference:run", version=6, **_reading(config, reference.reads(config)),
        files={**files, **evaluation_files, **verification_files, **reference_code.files},
        libraries=source.libraries + ("numpy",) + (("pillow",) if images else ()),
        extra_versions=reference_code.versions, shared=True, isolated=source.isolated,
    ))
    previous = "export"
    for step in by_stage["onnx"]:
        steps.append(optimization_node(step, {"model": previous}))
        previous = step.name
    compile_reading = _reading(config, compile_step.reads(backend))
    backend.check(compile_reading["config"])
    steps.append(StepNode(
        id="compile", run="builder.steps.compile:run", version=backend.compile_version, **compile_reading,
        upstream={"model": previous},
        files=module_code(f"backends.{backend.name}.compile", "compile").files, libraries=backend.libraries,
        host_dependent=backend.host is not None, host=backend.host, isolated="compile" in backend.isolated,
    ))
    previous = "compile"
    for step in by_stage["compiled"]:
        steps.append(optimization_node(step, {"compiled": previous}))
        previous = step.name
    level = verification_level(config, optimizations, precision.stores, backend)
    verify_reading = _reading(config, verify.reads(config, _tolerance_levels(config, level, precision.computes)))
    runtime_code = module_code(backend.runtime_module, "runtime").files  # what verify runs and package ships
    if backend.proxy:  # what verify runs where the backend's runtime cannot run (TensorRT without a GPU)
        runtime_code |= module_code(backend.proxy, "proxy").files
    steps.append(StepNode(
        id="verify", run="builder.steps.verify:run", version=4,
        config={**verify_reading["config"], "level": level}, reads=verify_reading["reads"],
        upstream={"compiled": previous, "reference": "reference"}, files={**metric.files, **runtime_code},
        libraries=backend.libraries + ("numpy",), extra_versions=metric.versions, host_dependent=True,
        host=backend.runtime_host, reports=(REPORT_FILE,), isolated="verify" in backend.isolated,
    ))
    labels = config["serving"]["labels"]
    serving_files = {"labels": _labels_file(spec, labels)} if labels else {}
    package_reading = _reading(config, package.reads(config))
    archive = torchserve.wanted(backend, config["serving"])
    steps.append(StepNode(
        id="package", run="builder.steps.package:run", version=4,
        config={**package_reading["config"], "recipe": spec.recipe, "mdbuild": __version__},
        reads=package_reading["reads"],
        upstream={"compiled": previous, "report": "verify", "reference": "reference", "export": "export",
                  **{step.name: step.name for step in optimizations}},
        files={**serving_files, **module_code(f"backends.{backend.name}", "backend").files, **runtime_code,
               **_serving_files_code(backend.serving_files), **(_serving_files_code(TORCHSERVE) if archive else {}),
               "serving_code": SERVING_DIR, "templates": resource_dir("templates")},
        libraries=("jinja2", "numpy", "pillow", "pyyaml", "grpcio", "protobuf", *backend.pinned,
                   *((torchserve.ARCHIVER,) if archive else ())),
        host_dependent=True, reports=(REPORT_FILE, REPORT_PAGE), embeds_keys=True,
        isolated="package" in backend.isolated,
    ))
    return Plan(spec, tuple(steps))


TORCHSERVE = "backends.torchserve:write"


def _serving_files_code(writer: str | None) -> dict[str, Path]:
    """The module that writes another serving system's files ("module:function", named by a string, so no
    import finds it) and what it ships into them (its SHIPPED files): in the package key."""
    if not writer:
        return {}
    module = writer.split(":")[0]
    shipped = getattr(importlib.import_module(module), "SHIPPED", ())
    return {**module_code(module, "serving_files").files, **{f"shipped/{path.name}": path for path in shipped}}


def _labels_file(spec: BuildSpec, labels: str) -> Path:
    """serving.labels: a text file of class names, one per line."""
    path = spec.existing_path(labels, "serving.labels")
    try:
        names = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise MdbuildError(f"cannot read {path} as text: {exc}", "serving.labels",
                           "give a UTF-8 text file with one class name per line") from exc
    if not names:
        raise MdbuildError(f"{path} names no class", "serving.labels", "give one class name per line")
    return path


def _tolerance_levels(config: dict[str, Any], level: str, computes: tuple[str, ...]) -> list[str]:
    """The levels verification may apply: of what the build stores and, where the runtime may compute
    in a lossier precision (bf16, or fp16 on a CPU with f16 arithmetic), of that one."""
    limits = config["verify"]["tolerances"]
    needed = sorted({lossiest([level, computed]) for computed in computes} | {level})
    for name in needed:
        if name not in limits:
            raise MdbuildError(f"no tolerances for level '{name}'", f"verify.tolerances.{name}",
                               "add max_rel_l2 / min_cosine limits for it (conf/verify/default.yaml has defaults)")
    return needed


def _metric_code(spec: BuildSpec) -> Code:
    evaluation = spec.config["evaluation"]
    if not evaluation["source"] or evaluation["metric"] == "top1":
        return Code()
    return factory_code(evaluation["metric"], spec.workdir, "evaluation.metric", "metric")
