"""TensorRT compile: the prepared ONNX graph (the graph every engine computes) goes into the artifact,
with the engines this host can build and the exact builder settings of a deferred build.

What is built where (target.options.flavor):
- rtx: a TensorRT-RTX engine for the listed compute capabilities, on any host (no GPU needed);
- tensorrt: with full TensorRT and an NVIDIA GPU here, an engine for this GPU; otherwise a deferred
  build, which serve.py --build-engine runs on the GPU host;
- auto: as tensorrt where this host has full TensorRT and a GPU; otherwise an RTX engine (where
  TensorRT-RTX is installed) and the deferred build.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from backends.tensorrt import FLAVORS, GPU_FAMILIES, RTX_COMPUTE_CAPABILITIES
from backends.tensorrt.host import gpus, sdk
from builder import cases
from builder.errors import MdbuildError, first_line, missing_extra
from builder.inputs import batch_dim

MODEL_FILE = "model.onnx"
FULL_TENSORRT = "tensorrt-cu12"  # what a GPU host installs for the deferred build


def check(config: dict[str, Any]) -> None:
    """The values compile reads, at plan time."""
    options = config["target"]["options"]
    if options["flavor"] not in FLAVORS:
        raise MdbuildError(f"'{options['flavor']}' is not a TensorRT flavor", "target.options.flavor",
                           f"choose one of: {', '.join(FLAVORS)}")
    capabilities = [str(c) for c in options["compute_capabilities"]]
    unknown = [c for c in capabilities if c not in RTX_COMPUTE_CAPABILITIES]
    rtx = options["flavor"] != "tensorrt"  # flavor=tensorrt builds no RTX engine: the list does not apply
    if rtx and (not capabilities or unknown or len(set(capabilities)) != len(capabilities)):
        raise MdbuildError(f"{capabilities} is not a list of distinct compute capabilities TensorRT-RTX builds for",
                           "target.options.compute_capabilities",
                           f"choose from: {', '.join(RTX_COMPUTE_CAPABILITIES)} (data-center GPUs such as H100/H200 "
                           "need flavor=tensorrt)")
    level = options["optimization_level"]
    if not isinstance(level, int) or not 0 <= level <= 5:
        raise MdbuildError(f"{level!r} is not a builder optimization level", "target.options.optimization_level",
                           "give a whole number from 0 (fastest build) to 5 (most tuned engine)")
    if not isinstance(options["workspace_mb"], int) or options["workspace_mb"] < 0:
        raise MdbuildError(f"{options['workspace_mb']!r} is not a size", "target.options.workspace_mb",
                           "give the builder's workspace in MiB, or 0 for TensorRT's default")
    profiles(config)
    if options["flavor"] == "rtx":
        if sdk("rtx") is None:
            raise missing_extra("tensorrt-rtx-cu12-bindings", "tensorrt-rtx", "target.options.flavor")
        for gpu in gpus():
            if gpu["compute_capability"] not in capabilities:
                raise MdbuildError(f"this host's GPU {gpu['name']} (compute capability {gpu['compute_capability']}) is "
                                   f"not among those the RTX engine is built for ({', '.join(capabilities)})",
                                   "target.options.compute_capabilities",
                                   f"add {gpu['compute_capability']} if TensorRT-RTX supports it "
                                   f"({', '.join(RTX_COMPUTE_CAPABILITIES)}), else use target.options.flavor=tensorrt")


def profiles(config: dict[str, Any]) -> dict[str, list[int]]:
    """[min, opt, max] of each dynamic dimension of model.inputs, from target.options.profiles or the
    defaults (model.dims for opt; the batch dimension up to serving.max_batch_size and the largest batch
    verification runs)."""
    model, given = config["model"], config["target"]["options"]["profiles"] or {}
    dynamic = list(dict.fromkeys(d for spec in model["inputs"] for d in spec["shape"] if isinstance(d, str)))
    batch = batch_dim(model["inputs"])
    largest = int(config["serving"]["max_batch_size"])
    verified = cases.sizes(model, config["verify"])
    for name in given:
        if name not in dynamic:
            raise MdbuildError(f"'{name}' is not a dynamic dimension of model.inputs", f"target.options.profiles.{name}",
                               f"give profiles for: {', '.join(dynamic) or 'none (every input shape is fixed)'}")
    resolved = {}
    for name in dynamic:
        value = int(model["dims"].get(name, 1))
        default = [1, value, max(value, largest, *verified[name])] if name == batch else [1, value, value]
        triple = list(given.get(name, default))
        where = f"target.options.profiles.{name}"
        if len(triple) != 3 or not all(isinstance(v, int) and v >= 1 for v in triple) or not triple[0] <= triple[1] <= triple[2]:
            raise MdbuildError(f"{triple} is not [min, opt, max] with 1 <= min <= opt <= max", where,
                               f"e.g. {where}=[1,{value},{max(value, 2 * value)}]")
        if not triple[0] <= value <= triple[2]:
            raise MdbuildError(f"the profile {triple} does not cover model.dims.{name}={value}, the size verification runs",
                               where, f"make min <= {value} <= max")
        if name == batch and triple[2] < largest:
            raise MdbuildError(f"the profile {triple} does not cover serving.max_batch_size={largest}", where,
                               f"raise its max to {largest}, or lower serving.max_batch_size")
        if not triple[0] <= min(verified[name]) <= max(verified[name]) <= triple[2]:
            raise MdbuildError(f"the profile {triple} does not cover the sizes verification runs, {verified[name]}", where,
                               f"cover them, or set verify.sizes.{name} within [{triple[0]}, {triple[2]}]")
        resolved[name] = triple
    return resolved


def shapes(config: dict[str, Any], ranges: dict[str, list[int]]) -> dict[str, list[list[int]]]:
    """Each input with a dynamic dimension: its [min, opt, max] shapes."""
    return {spec["name"]: [[ranges[d][i] if isinstance(d, str) else d for d in spec["shape"]] for i in range(3)]
            for spec in config["model"]["inputs"] if any(isinstance(d, str) for d in spec["shape"])}


def plan_here(flavor: str) -> tuple[list[str], bool]:
    """The engine flavors this host builds, and whether a full TensorRT build is deferred to the GPU host."""
    local = sdk("tensorrt") is not None and bool(gpus())
    if flavor == "rtx":
        return ["rtx"], False
    if local:
        return ["tensorrt"], False
    return (["rtx"] if flavor == "auto" and sdk("rtx") else []), True


def compile_model(onnx_path: Path, config: dict[str, Any], out: Path) -> dict[str, Any]:
    from backends.tensorrt import runtime

    check(config)
    options = config["target"]["options"]
    shutil.copyfile(onnx_path, out / MODEL_FILE)
    ranges, batch = profiles(config), batch_dim(config["model"]["inputs"])
    builder = {"optimization_level": options["optimization_level"], "workspace_mb": options["workspace_mb"],
               "fp32": config["target"]["precision"] == "fp32", "shapes": shapes(config, ranges)}
    flavors, deferred = plan_here(options["flavor"])
    engines = []
    for flavor in flavors:
        capabilities = [str(c) for c in options["compute_capabilities"]] if flavor == "rtx" else None
        file = f"model.{flavor}.engine"
        try:
            version = runtime.build_engine(flavor, out / MODEL_FILE, builder, out / file, capabilities)
        except runtime.UnsupportedGraph as exc:
            raise MdbuildError(first_line(exc), "target.backend",
                               "build an onnxruntime or openvino target, or export the model without that op "
                               "(model.opset, model.exporter)") from exc
        except runtime.BuildFailed as exc:
            what = " ".join(str(exc).split())
            what = what if len(what) <= 400 else what[:400].rsplit(" ", 1)[0] + " ..."
            if "workspace" in what.lower():
                raise MdbuildError(what, "target.options.workspace_mb",
                                   "raise target.options.workspace_mb, or 0 for TensorRT's default") from exc
            raise MdbuildError(what, "target.backend", "build another precision or an onnxruntime or openvino "
                               "target; the message is TensorRT's") from exc
        engines.append(_engine_record(flavor, file, version, capabilities))
    return {
        "model_file": MODEL_FILE,
        "engines": engines,
        "profiles": ranges,
        "notes": _profile_notes(config, ranges, batch),
        "deferred": {"flavor": "tensorrt", "install": FULL_TENSORRT,
                     "runs_on": "any NVIDIA GPU with full TensorRT, after one engine build there "
                                "(serve.py --build-engine, or the first start)"} if deferred else None,
        "builder": builder,
        "precision": config["target"]["precision"],
        # The most rows a request may hold; None: the batch is fixed by the model's shapes (checked there).
        "max_batch_size": ranges[batch][2] if batch else None,
        # The graph every engine computes, as the build host verifies it (ONNX Runtime CPU).
        "proxy": {"model_file": MODEL_FILE, "runtime_optimization": "basic", "intra_op_threads": 0,
                  "inter_op_threads": 1},
    }


def _engine_record(flavor: str, file: str, version: str, capabilities: list[str] | None) -> dict[str, Any]:
    if flavor == "rtx":
        families = "; ".join(f"{c} {GPU_FAMILIES[c]}" for c in capabilities)
        return {"flavor": "rtx", "file": file, "sdk": f"TensorRT-RTX {version}", "compute_capabilities": capabilities,
                "runs_on": f"NVIDIA GPUs of compute capability {', '.join(capabilities)} ({families}) with TensorRT-RTX {version}"}
    gpu = gpus()[0]
    return {"flavor": "tensorrt", "file": file, "sdk": f"TensorRT {version}", "gpu": gpu["name"],
            "compute_capability": gpu["compute_capability"],
            "runs_on": f"{gpu['name']} (compute capability {gpu['compute_capability']}) with TensorRT {version}"}


def _profile_notes(config: dict[str, Any], ranges: dict[str, list[int]], batch: str | None) -> list[str]:
    """What the default profile of a dimension other than the batch leaves out: sizes above model.dims."""
    given = config["target"]["options"]["profiles"] or {}
    return [f"the engines take {name} up to {high} (model.dims.{name}); for longer inputs set "
            f"+target.options.profiles.{name}=[1,{best},<max>]"
            for name, (_, best, high) in ranges.items() if name != batch and name not in given]
