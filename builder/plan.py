"""BuildSpec -> DAG of steps. Pure: reads no file contents and imports no ML SDK.

export ──> compile ──> verify ──> package
reference ─────────────^           ^
(reference = the source model's outputs on the verification inputs: shared by every target)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import get_backend
from builder import __version__
from builder.sources import factory_libraries, get_source, source_files
from builder.spec import BuildSpec

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
    shared: bool = False  # the same for every target of the recipe (slot ignores the target)


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
    model, target = spec.model, spec.target
    source = get_source(model)
    backend = get_backend(target["backend"])
    files = source_files(spec)
    code_versions = factory_libraries(model, spec.workdir)
    export = StepNode(
        id="export", run=source.export, version=1,
        config={"model": _pick(model, _EXPORT_KEYS)},
        files=files, libraries=source.libraries, extra_versions=code_versions, shared=True,
    )
    reference = StepNode(
        id="reference", run=source.reference, version=1,
        config={"model": _pick(model, _REFERENCE_KEYS),
                "verify": _pick(spec.config["verify"], ("samples", "seed"))},
        files=files, libraries=source.libraries + ("numpy",), extra_versions=code_versions, shared=True,
    )
    compile_ = StepNode(
        id="compile", run="builder.steps.compile:run", version=backend.compile_version,
        config={"target": _pick(target, ("backend", "precision", "graph_optimization")),
                "hardware": spec.config["hardware"]},
        upstream={"model": "export"}, libraries=backend.libraries,
    )
    verify = StepNode(
        id="verify", run="builder.steps.verify:run", version=1,
        config={"target": _pick(target, ("name", "precision")), "verify": spec.config["verify"]},
        upstream={"compiled": "compile", "reference": "reference"},
        libraries=backend.libraries + ("numpy",), host_dependent=True,
    )
    package = StepNode(
        id="package", run="builder.steps.package:run", version=1,
        config={"recipe": spec.recipe, "mdbuild": __version__,
                **{key: spec.config[key] for key in ("model", "target", "hardware", "verify")}},
        upstream={"compiled": "compile", "report": "verify", "reference": "reference", "export": "export"},
        libraries=("jinja2", "numpy", backend.distribution), host_dependent=True,
    )
    return Plan(spec, (export, reference, compile_, verify, package))
