"""What a TensorRT build depends on about this host, found without importing an SDK: the NVIDIA GPUs
(nvidia-smi) and which TensorRT SDKs are installed."""

from __future__ import annotations

import functools
import shutil
import subprocess
from importlib import metadata

from backends.tensorrt.runtime import SDK_MODULES
from builder.serving.host import host_fingerprint
from builder.versions import importable, library_version


@functools.lru_cache(maxsize=1)
def gpus() -> tuple[dict, ...]:
    """This host's NVIDIA GPUs: name, compute capability and driver; () without nvidia-smi or a GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        proc = subprocess.run([smi, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if proc.returncode != 0:
        return ()
    found = []
    for line in proc.stdout.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3:
            found.append({"name": parts[0], "compute_capability": parts[1], "driver": parts[2]})
    return tuple(found)


@functools.lru_cache(maxsize=None)
def sdk(flavor: str) -> tuple[str, str] | None:
    """(module, version) of the flavor's SDK when installed here, else None."""
    for module in SDK_MODULES[flavor]:
        if importable(module):
            distributions = metadata.packages_distributions().get(module, [])
            versions = [metadata.version(name) for name in distributions]
            return module, (versions[0] if versions else "unknown")
    return None


def runs_here() -> str | None:
    """None when an engine built here also runs here (a GPU the installed SDK builds for), else why not."""
    from backends.tensorrt import RTX_COMPUTE_CAPABILITIES

    found = gpus()
    if not found:
        return "no NVIDIA GPU here (nvidia-smi finds none): its engines cannot run, nor their latency be measured"
    if library_version("cuda-bindings") is None:
        return "cuda-python (cuda-bindings) is not installed: its engines cannot run here"
    if sdk("tensorrt") is not None:
        return None
    if sdk("rtx") is not None and any(gpu["compute_capability"] in RTX_COMPUTE_CAPABILITIES for gpu in found):
        return None
    names = ", ".join(f"{gpu['name']} ({gpu['compute_capability']})" for gpu in found)
    return f"no TensorRT SDK here builds for {names}: install full TensorRT (tensorrt-cu12)"


def facts() -> dict:
    """The host facts in the compile key: with full TensorRT installed, compile builds for the local
    GPUs, so they and the SDK are part of what it builds; without it the engines do not depend on
    this host (an RTX engine is built for the listed compute capabilities on any host)."""
    full = sdk("tensorrt")
    if full is None:
        return {"tensorrt": None}
    return {"tensorrt": full[1], "gpus": list(gpus())}


def runtime_facts() -> dict:
    """The host facts in the verify key: whether an engine runs here (the GPUs, the CUDA binding) or
    the prepared graph runs on ONNX Runtime CPU instead (the CPU)."""
    return {**host_fingerprint(), "gpus": list(gpus()), "cuda-bindings": library_version("cuda-bindings")}
