"""The code a step runs that is not mdbuild's: a factory (model, data or metric, by import path),
identified by the files it imports and the distributions they come from. A factory from an installed
distribution is that distribution's version; one from the user's tree is its module, the local
modules it imports (transitively, found by reading their imports, never by importing them) and the
versions of the installed distributions those import (transformers, timm, keras, ...)."""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from builder.errors import MdbuildError
from builder.imports import importable_from

_INSTALLED = ("site-packages", "dist-packages")


@dataclass(frozen=True)
class Code:
    files: dict[str, Path] = field(default_factory=dict)  # "<label> code <file relative to its root>" -> file
    versions: dict[str, str | None] = field(default_factory=dict)  # distribution -> version

    def __or__(self, other: Code) -> Code:
        return Code({**self.files, **other.files}, {**self.versions, **other.versions})


def factory_code(dotted: str, workdir: Path, key: str, label: str) -> Code:
    """The code behind `package.module.function` (imported from `workdir`); `label` names its
    inputs in the step's description (`factory code models/lstm.py`)."""
    module = dotted.rpartition(".")[0]
    top = module.split(".")[0]
    location = _top_location(top, str(workdir))
    if location is None or not module:
        raise MdbuildError(f"cannot find the module of '{dotted}'", key,
                           "give a full import path (package.module.function) importable from this directory")
    if _installed(location):
        distribution = _distribution(top)
        return Code(versions={distribution: metadata.version(distribution)} if distribution else {})
    root = location.parent
    files: dict[str, Path] = {}
    versions: dict[str, str | None] = {}
    pending = [module]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(root, name)
        if path is None:
            continue  # an attribute imported from a package, not a module
        files[f"{label} code {path.relative_to(root).as_posix()}"] = path
        parent = name.rpartition(".")[0]
        if parent:
            pending.append(parent)  # importing a.b runs a/__init__.py
        package = name if path.name == "__init__.py" else parent
        for imported in _imports(path, package):
            first = imported.split(".")[0]
            if _local(root, first):
                pending.append(imported)
            elif first not in sys.stdlib_module_names:
                distribution = _distribution(first)
                if distribution:
                    versions[distribution] = metadata.version(distribution)
    return Code(dict(sorted(files.items())), dict(sorted(versions.items())))


def _imports(path: Path, package: str) -> list[str]:
    """The modules a file imports anywhere in it (factories often import inside functions); for
    `from m import x`, both m and m.x (x may be a submodule)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise MdbuildError(f"cannot parse {path}: {exc.msg} (line {exc.lineno})", str(path), "fix the syntax error") from exc
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, base] if base else anchor)
            if base:
                found.append(base)
                found += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return found


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _local(root: Path, top: str) -> bool:
    """Whether a top-level module lives in the user's tree (a namespace package: a folder that no
    installed distribution provides)."""
    return _module_file(root, top) is not None or ((root / top).is_dir() and _distribution(top) is None)


@functools.lru_cache(maxsize=None)
def _top_location(top: str, workdir: str) -> Path | None:
    """The top-level package directory or module file, found without importing it."""
    importable_from(Path(workdir))
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin) if spec.origin and spec.origin not in ("built-in", "frozen") else None


def _installed(location: Path) -> bool:
    return any(part in _INSTALLED for part in location.parts)


@functools.lru_cache(maxsize=None)
def _distribution(top: str) -> str | None:
    """The installed distribution providing a top-level module, or None."""
    try:
        # Most distributions are named like their package (torch, transformers); the full scan of every
        # installed distribution costs half a second, so it is only the fallback.
        return metadata.distribution(top).metadata["Name"]
    except metadata.PackageNotFoundError:
        names = _packages_distributions().get(top)
        return names[0] if names else None


@functools.lru_cache(maxsize=None)
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()
