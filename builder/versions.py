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


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@functools.lru_cache(maxsize=1)
def host_fingerprint() -> dict[str, object]:
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
