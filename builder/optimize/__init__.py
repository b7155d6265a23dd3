"""Optimization steps: the recipe's (`optimize: [...]`) then the target's (`target.optimize`). Each
is its own DAG node with its own key. Generic steps live here; a backend's own live in its folder
(`Backend.optimizations`). A step's module has `run(ctx, inputs, out)` and `reads(config)`, and may
have `check(config)` (values, at plan time) and `calibrates(config)`; describing a step imports no SDK.

Stages: "torch" steps change the PyTorch model before export, "onnx" steps rewrite the exported ONNX
graph before compilation, "compiled" steps rewrite the backend's compiled model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from builder.errors import MdbuildError

# How far a step may move outputs from the source model; verification uses the tolerances of the
# lossiest step of a build (conf/verify: tolerances.<level>).
LOSS_ORDER = ("fp32", "fp16", "bf16", "int8", "pruned")
STAGES = ("torch", "onnx", "compiled")


@dataclass(frozen=True)
class Optimization:
    name: str
    stage: str
    module: str  # its implementation: run(ctx, inputs, out), reads(config) [, check, calibrates]
    version: int
    libraries: tuple[str, ...]
    sources: tuple[str, ...] = ()  # model sources it applies to; () = every source
    loss: str = "fp32"
    calibrated: bool = False
    isolated: bool = False  # runs in a fresh process (see builder.execute)
    options: type | None = None  # dataclass: the schema of its config section, named after the step

    @property
    def run(self) -> str:
        return f"{self.module}:run"

    def code(self) -> ModuleType:
        return importlib.import_module(self.module)

    def reads(self, config: dict[str, Any]) -> list[str]:
        return list(self.code().reads(config))

    def uses_calibration(self, config: dict[str, Any]) -> bool:
        calibrates = getattr(self.code(), "calibrates", None)
        return self.calibrated and (calibrates is None or calibrates(config))

    def check(self, config: dict[str, Any]) -> None:
        check = getattr(self.code(), "check", None)
        if check is not None:
            check(config)


@dataclass
class PruneOptions:
    # Global unstructured magnitude pruning of Conv and Linear weights, before export.
    amount: float = 0.5


GENERIC = {
    step.name: step
    for step in (
        Optimization("prune", "torch", "builder.optimize.prune", 1, ("torch",), sources=("pytorch",), loss="pruned",
                     options=PruneOptions),
        Optimization("simplify", "onnx", "builder.optimize.simplify", 1, ("onnx", "onnxscript")),
    )
}


def resolve_optimizations(config: dict[str, Any], backend, backends: list) -> list[Optimization]:
    """The recipe's steps then the target's, checked against the target (`backend`, one of all the
    `backends`) and the source."""
    source, target = config["model"]["source"], config["target"]
    own = {step.name: step for step in backend.optimizations}
    available = {**GENERIC, **own}
    declared = [("optimize", name) for name in config["optimize"]] + [("target.optimize", n) for n in target["optimize"]]
    seen: dict[str, str] = {}
    chosen = []
    for key, name in declared:
        if name not in available:
            owners = [other.name for other in backends if any(s.name == name for s in other.optimizations)]
            if owners:
                raise MdbuildError(f"step '{name}' does not apply to target {target['name']} ({backend.name})", key,
                                   f"'{name}' serves {', '.join(owners)} targets; remove it or choose such a target")
            others = sorted({s.name for other in backends for s in other.optimizations} - set(available))
            raise MdbuildError(f"unknown optimization step '{name}'", key,
                               f"choose from: {', '.join(available)}" + (f" (other targets: {', '.join(others)})" if others else ""))
        step = available[name]
        if name in seen:
            where = "optimize" if seen[name] == key else f"{key} of target {target['name']}"
            raise MdbuildError(f"step '{name}' is listed twice (also in {where})", "optimize",
                               f"remove the second '{name}' from optimize")
        seen[name] = key
        if step.sources and source not in step.sources:
            raise MdbuildError(f"step '{name}' does not apply to a {source} source", key,
                               f"'{name}' serves {', '.join(step.sources)} sources")
        step.check(config)
        chosen.append(step)
    return chosen


def verification_level(config: dict[str, Any], steps: list[Optimization], stored: str, backend) -> str:
    """The level of what the build stores: the target precision's (`stored`, from its backend: fp32 for
    bf16, which is arithmetic only) and the optimization steps'. Verification raises it to the level of
    the arithmetic the runtime reports it computes in."""
    if config["target"]["precision"] == "int8" and not any(step.loss == "int8" for step in steps):
        raise MdbuildError(f"target {config['target']['name']} is int8 but runs no quantization step",
                           "target.optimize", "add the backend's quantization step ("
                           + (", ".join(s.name for s in backend.optimizations if s.loss == "int8") or "it has none") + ")")
    return lossiest([stored] + [step.loss for step in steps])


def lossiest(levels: list[str]) -> str:
    return max(levels, key=lambda level: LOSS_ORDER.index(level) if level in LOSS_ORDER else 0)
