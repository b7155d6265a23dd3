"""Optimization steps a recipe (`optimize: [...]`) or a target (`target.steps`) declares. Each is its
own DAG node with its own key. What each one is, where it runs and whom it serves is described here
without importing any SDK; the implementations import theirs when they run.

Stages: "torch" steps change the PyTorch model before export, "onnx" steps rewrite the exported ONNX
graph before compilation, "compiled" steps rewrite the backend's compiled model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from builder.errors import MdbuildError

# How far a step may move outputs from the source model; verification uses the tolerances of the
# lossiest step of a build (conf/verify: tolerances.<level>).
LOSS_ORDER = ("fp32", "fp16", "bf16", "int8", "pruned")


@dataclass(frozen=True)
class Transform:
    name: str
    stage: str
    run: str  # "module:function"
    version: int
    section: str | None  # the config section it reads
    libraries: tuple[str, ...]
    serves: tuple[str, ...] = ()  # backends it applies to; () = every backend
    sources: tuple[str, ...] = ()  # model sources it applies to; () = every source
    loss: str = "fp32"
    calibrated: bool = False
    isolated: bool = False  # runs in a fresh process (see builder.execute)

    def uses_calibration(self, config: dict[str, Any]) -> bool:
        return self.calibrated and not (self.section == "quantization" and config["quantization"]["mode"] == "dynamic")


TRANSFORMS = {
    t.name: t
    for t in (
        Transform("prune", "torch", "builder.transforms.prune:run", 1, "prune", ("torch",),
                  sources=("pytorch",), loss="pruned"),
        Transform("simplify", "onnx", "builder.transforms.simplify:run", 1, None, ("onnx", "onnxscript")),
        Transform("fp16", "onnx", "builder.transforms.fp16:run", 1, "fp16", ("onnx", "onnxruntime"),
                  serves=("onnxruntime",), loss="fp16"),
        Transform("ort_quantize", "onnx", "builder.transforms.ort_quantize:run", 1, "quantization",
                  ("onnx", "onnxruntime"), serves=("onnxruntime",), loss="int8", calibrated=True),
        # In a fresh process: the quantized IR's node names come from OpenVINO's per-process counter.
        Transform("nncf_quantize", "compiled", "builder.transforms.nncf_quantize:run", 1, "quantization",
                  ("nncf", "openvino"), serves=("openvino",), loss="int8", calibrated=True, isolated=True),
    )
}


def resolve_transforms(config: dict[str, Any]) -> list[Transform]:
    """The recipe's steps then the target's, checked against the target and the source."""
    backend, source = config["target"]["backend"], config["model"]["source"]
    declared = [("optimize", name) for name in config["optimize"]] + [("target.steps", n) for n in config["target"]["steps"]]
    seen: dict[str, str] = {}
    chosen = []
    for key, name in declared:
        if name not in TRANSFORMS:
            raise MdbuildError(f"unknown optimization step '{name}'", key, f"choose from: {', '.join(TRANSFORMS)}")
        transform = TRANSFORMS[name]
        if name in seen:
            where = "optimize" if seen[name] == key else f"{key} of target {config['target']['name']}"
            raise MdbuildError(f"step '{name}' is listed twice (also in {where})", "optimize",
                               f"remove the second '{name}' from optimize")
        seen[name] = key
        if transform.serves and backend not in transform.serves:
            raise MdbuildError(f"step '{name}' does not apply to target {config['target']['name']} ({backend})", key,
                               f"'{name}' serves {', '.join(transform.serves)} targets; remove it or choose such a target")
        if transform.sources and source not in transform.sources:
            raise MdbuildError(f"step '{name}' does not apply to a {source} source", key,
                               f"'{name}' serves {', '.join(transform.sources)} sources")
        if transform.section == "quantization" and config["quantization"]["mode"] == "dynamic" and name != "ort_quantize":
            raise MdbuildError(f"dynamic quantization is not available for {backend}", "quantization.mode",
                               "use quantization.mode=static, or an onnxruntime target for dynamic quantization")
        chosen.append(transform)
    return chosen


def verification_level(config: dict[str, Any], transforms: list[Transform], stored: str) -> str:
    """The level of what the build stores: the target precision's (`stored`, from its backend: fp32 for
    bf16, which is arithmetic only) and the optimization steps'. Verification raises it to the level of
    the arithmetic the runtime reports it computes in."""
    if config["target"]["precision"] == "int8" and not any(t.loss == "int8" for t in transforms):
        raise MdbuildError(f"target {config['target']['name']} is int8 but runs no quantization step", "target.steps",
                           "add the backend's quantization step (ort_quantize or nncf_quantize)")
    return lossiest([stored] + [t.loss for t in transforms])


def lossiest(levels: list[str]) -> str:
    return max(levels, key=lambda level: LOSS_ORDER.index(level) if level in LOSS_ORDER else 0)
