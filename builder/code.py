"""The code a step runs besides mdbuild's core (whose changes are step versions): a user's factory
(model, data or metric, by import path) and a backend's modules, identified by the files they import
and the distributions those come from. The imports are read from the files, never executed."""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import sys
import sysconfig
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from builder.errors import MdbuildError
from builder.imports import importable_from

_INSTALLED = ("site-packages", "dist-packages")
_STDLIB = Path(sysconfig.get_paths()["stdlib"])


@dataclass(frozen=True)
class Code:
    files: dict[str, Path] = field(default_factory=dict)  # "<label> code <file>" -> file
    versions: dict[str, str | None] = field(default_factory=dict)  # distribution -> version

    def __or__(self, other: Code) -> Code:
        return Code({**self.files, **other.files}, {**self.versions, **other.versions})


def factory_code(dotted: str, workdir: Path, key: str, label: str) -> Code:
    """The code behind `package.module.function` imported from `workdir`: from the standard library,
    nothing; from an installed distribution, its version; from the user's tree, its module, the local
    modules it imports (transitively) and the versions of the distributions those import. `label`
    names its inputs in the step's description (`factory code models/lstm.py`)."""
    module = dotted.rpartition(".")[0]
    top = module.split(".")[0]
    location = _top_location(top, str(workdir))
    if location is None and top in sys.stdlib_module_names:
        return Code()  # built into the interpreter
    if location is None or not module:
        raise MdbuildError(f"cannot find the module of '{dotted}'", key,
                           "give a full import path (package.module.function) importable from this directory")
    if location.is_relative_to(_STDLIB) and not _installed(location):
        return Code()  # the standard library: the Python version is in the host facts
    root = location.parent
    distributions = _distributions(top)
    if _installed(location) or (distributions and not root.is_relative_to(workdir) and not _editable(distributions)):
        return Code(versions=_versions(top))
    # The user's tree, or a library installed in editable mode (its files and its version).
    try:
        walked = _walk(module, label, lambda name: _module_file([root], name), lambda path: path.relative_to(root),
                       lambda first: _module_file([root], first) is not None
                       or ((root / first).is_dir() and not _distributions(first)))  # a namespace package
    except SyntaxError as exc:  # in the factory's module or one it imports
        raise MdbuildError(f"cannot parse {exc.filename}: {exc.msg} (line {exc.lineno})", key, "fix the syntax error") from exc
    _check_defined(root, module, dotted.rpartition(".")[2], key)
    return Code(versions=_versions(top)) | walked


def _check_defined(root: Path, module: str, name: str, key: str) -> None:
    """The factory's name is defined in its module: read from the file at plan time (planning imports no
    model code), so that a typo fails before any step runs."""
    path = _module_file([root], module)
    if path is None or _module_file([root], f"{module}.{name}") is not None:
        return  # a namespace package, or a submodule (not a factory: its step says so)
    stat = path.stat()
    defined = _top_level_names(path, (stat.st_mtime_ns, stat.st_size, stat.st_ino))
    if defined is not None and name not in defined:
        raise MdbuildError(f"cannot import '{module}.{name}': {path.relative_to(root)} defines no '{name}'", key,
                           "give an import path (package.module.function) importable from this directory")


@functools.lru_cache(maxsize=4096)
def _top_level_names(path: Path, _stat: tuple[int, int, int]) -> frozenset[str] | None:
    """The names a module binds at its top level (in if/try/with/for/match blocks too, by assignment,
    import, def, class, walrus or pattern); None where the text cannot tell: `from m import *`, a module
    __getattr__ (lazy loading), names made through globals(), setattr, exec or vars."""
    names: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_bytes(), filename=str(path))]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            pending += node.decorator_list  # its body runs later, in its own scope
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC:
            return None
        pending += ast.iter_child_nodes(node)
    return None if "__getattr__" in names else frozenset(names)


# Calls at a module's top level that may bind names the text does not show.
_DYNAMIC = {"globals", "setattr", "exec", "vars", "locals"}


def module_code(module: str, label: str) -> Code:
    """A backend module and the modules of its package it imports, wherever the package's folders are
    (`backends` may span several); the distributions they import are the backend's libraries."""
    top = module.split(".")[0]
    folders = [Path(folder) for folder in sys.modules[top].__path__]
    return _walk(module, label, lambda name: _module_file(folders, name, top),
                 lambda path: Path(top) / next(path.relative_to(f) for f in folders if path.is_relative_to(f)),
                 lambda first: first == top, local_only=True)


def _walk(module: str, label: str, locate: Callable[[str], Path | None], name_of: Callable[[Path], Path],
          local: Callable[[str], bool], local_only: bool = False) -> Code:
    """From `module`, every module file `locate` finds that it imports, transitively, named by
    `name_of`; `local` says whether a top-level name is part of the tree walked."""
    files: dict[str, Path] = {}
    versions: dict[str, str | None] = {}
    pending, seen = [module], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        path = locate(name)
        if path is None:
            continue  # an attribute imported from a package, not a module
        files[f"{label} code {name_of(path).as_posix()}"] = path
        parent = name.rpartition(".")[0]
        if parent:
            pending.append(parent)  # importing a.b runs a/__init__.py
        package = name if path.name == "__init__.py" else parent
        stat = path.stat()
        for imported in _imports(path, (stat.st_mtime_ns, stat.st_size, stat.st_ino), package):
            first = imported.split(".")[0]
            if local(first):
                pending.append(imported)
            elif not local_only and first not in sys.stdlib_module_names:
                versions.update(_versions(first))
    return Code(dict(sorted(files.items())), dict(sorted(versions.items())))


@functools.lru_cache(maxsize=4096)
def _imports(path: Path, _stat: tuple[int, int, int], package: str) -> tuple[str, ...]:
    """The modules a file imports anywhere in it (factories often import inside functions); for
    `from m import x`, both m and m.x (x may be a submodule). Dynamic imports are not seen."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base:
                found.append(base)
                found += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return tuple(found)


def _module_file(folders: list[Path], name: str, top: str | None = None) -> Path | None:
    """The file of a module under `folders` (the roots the top-level name lives in, or, with `top`,
    the folders of that package)."""
    parts = name.split(".")
    if top is not None:
        if parts[0] != top:
            return None
        parts = parts[1:]
        if not parts:
            return next((f / "__init__.py" for f in folders if (f / "__init__.py").is_file()), None)
    for folder in folders:
        base = folder.joinpath(*parts)
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
    return None


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


def _versions(top: str) -> dict[str, str | None]:
    return {name: metadata.version(name) for name in _distributions(top)}


def _editable(distributions: tuple[str, ...]) -> bool:
    """Whether one of them is installed in editable mode (pip install -e): its files are the code."""
    for name in distributions:
        recorded = metadata.distribution(name).read_text("direct_url.json")
        if recorded and json.loads(recorded).get("dir_info", {}).get("editable"):
            return True
    return False


@functools.lru_cache(maxsize=None)
def _distributions(top: str) -> tuple[str, ...]:
    """The installed distribution named like a top-level module, else all that provide it (several
    share some names, e.g. `nvidia`), in a stable order."""
    try:
        # Most distributions are named like their package (torch, transformers); the full scan of every
        # installed distribution costs half a second, so it is only the fallback.
        return (metadata.distribution(top).metadata["Name"],)
    except metadata.PackageNotFoundError:
        return tuple(sorted(set(_packages_distributions().get(top, ()))))


@functools.lru_cache(maxsize=None)
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()
