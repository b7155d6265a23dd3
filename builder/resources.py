"""Where the shipped conf/, recipes/ and templates/ live: beside the package in a source checkout,
inside it (builder/_data) in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"mdbuild is installed without its '{name}' directory; reinstall it")
