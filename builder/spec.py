"""The resolved build request the core works on: plain data, no Hydra objects."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import MdbuildError


@dataclass(frozen=True)
class BuildSpec:
    recipe: str
    recipe_path: Path | None  # None for a recipe stored in code
    packaged_recipe: bool
    config: dict[str, Any]  # resolved and schema-checked: model, target, hardware, verify, ...
    workdir: Path  # the directory mdbuild was started in; relative paths resolve against it

    @property
    def model(self) -> dict[str, Any]:
        return self.config["model"]

    @property
    def target(self) -> dict[str, Any]:
        return self.config["target"]

    def resolve_path(self, value: str, key: str | None = None) -> Path:
        """A path as the recipe gives it: absolute, relative to the directory mdbuild runs in, or
        `pkg://package.module/file` inside an installed Python package (found without importing it;
        one that is not installed is an error naming `key`)."""
        if value.startswith(PACKAGE_SCHEME):
            return package_path(value[len(PACKAGE_SCHEME):], key or value)
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.workdir / path

    def existing_path(self, value: str, key: str) -> Path:
        """resolve_path for a file the build reads; one that is not there is an error naming the key."""
        path = self.resolve_path(value, key)
        if not path.exists():
            raise MdbuildError(f"file not found: {path}", key, "check the path (relative paths start in the directory "
                               "mdbuild runs in; pkg://package/file is a file of an installed package)")
        return path


PACKAGE_SCHEME = "pkg://"


def writable_directory(path: Path, key: str) -> None:
    """A directory the build can create (if missing) and write in; else one line naming the key. Checked
    before any step runs, creating nothing: a temporary file in the directory, or in the nearest one above
    it that exists (where the build would create the rest), so that concurrent builds cannot trip on each
    other's probes."""
    import tempfile

    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise MdbuildError(f"{probe} is a file, not a directory, so {path} cannot be made", key,
                           "point it at a directory")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise MdbuildError(f"cannot write in {path} ({exc.strerror or exc})", key,
                           "point it at a directory this user can create and write") from None


def package_path(reference: str, key: str) -> Path:
    """`package.module/relative/file` -> that file in the package's directory (the first of a namespace
    package's directories that holds it). Only the top-level package is looked up, never imported."""
    module, _, relative = reference.partition("/")
    top, *subpackages = module.split(".")
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise MdbuildError(f"'{top}' in {PACKAGE_SCHEME}{reference} is not an installed package", key,
                           "install the package, or give the file's path")
    candidates = [Path(location).joinpath(*subpackages, relative) for location in found.submodule_search_locations]
    return next((path for path in candidates if path.exists()), candidates[0])
