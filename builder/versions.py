"""Library versions (read from package metadata, never by importing the SDK) and the host
fingerprint that machine-dependent steps put in their keys."""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
from importlib import metadata


@functools.lru_cache(maxsize=None)
def library_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def library_versions(*distributions: str) -> dict[str, str | None]:
    return {name: library_version(name) for name in distributions}


def importable(package: str) -> bool:
    """Whether a top-level package can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


# CPU features that change what a runtime computes, not just how fast: bf16 and fp16 arithmetic
# (OpenVINO computes in them where they exist), int8 dot products and AMX tiles (int8 kernels), and
# the vector width (the summation order of float kernels). Two hosts that a hypervisor names alike
# ("AMD EPYC") can differ in exactly these.
NUMERIC_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                     "amx_int8", "amx_fp16", "asimdhp", "bf16", "i8mm")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or "unknown"


def numeric_cpu_flags() -> list[str]:
    """Which of NUMERIC_CPU_FLAGS this CPU has (x86 'flags', Arm 'Features')."""
    info = _cpuinfo()
    present = set((info.get("flags") or info.get("Features") or "").split())
    return [flag for flag in NUMERIC_CPU_FLAGS if flag in present]


def describe_cpu() -> str:
    """One line for logs and reports: the model and the flags that change numerics."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs, numeric flags: {' '.join(numeric_cpu_flags()) or 'none of ' + ' '.join(NUMERIC_CPU_FLAGS)}"


@functools.lru_cache(maxsize=1)
def host_fingerprint() -> dict[str, object]:
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu": cpu_model(),
        "cpu_flags": numeric_cpu_flags(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
