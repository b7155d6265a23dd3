"""Library versions, read from package metadata, never by importing the SDK. (The host fingerprint
that machine-dependent steps put in their keys is builder.serving.host: artifacts use it too.)"""

from __future__ import annotations

import functools
import importlib.util
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
