"""Import a user's function by its dotted path, from the directory mdbuild runs in."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from builder.errors import MdbuildError, first_line, missing_extra


def import_sdk(module: str, extra: str, where: str) -> Any:
    """Import an ML SDK where it is used, or fail naming the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(module, extra, where) from exc


def importable_from(workdir: Path) -> None:
    """The user's own modules import from the directory mdbuild runs in, ahead of installed ones."""
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))


def resolve_callable(path: str, workdir: Path, key: str) -> Callable[..., Any]:
    importable_from(workdir)
    module_name, _, attribute = path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise MdbuildError(f"cannot import '{path}': {exc}", key,
                           "give an import path (package.module.function) importable from this directory") from exc
    if not callable(target):
        raise MdbuildError(f"'{path}' is not callable", key, "name a function or class")
    return target


def build_from_factory(model: dict[str, Any], workdir: Path, expected: type | tuple[type, ...] = object,
                       what: str = "model") -> Any:
    """The recipe's model.factory called with model.kwargs; what it returns must be an `expected`."""
    factory = resolve_callable(model["factory"], workdir, "model.factory")
    try:
        inspect.signature(factory).bind(**model["kwargs"])
    except TypeError as exc:
        raise MdbuildError(f"the factory {model['factory']} rejects its arguments: {exc}", "model.kwargs",
                           "pass only keyword arguments the factory accepts") from exc
    except ValueError:  # a builtin or C function without a signature: calling it tells
        pass
    try:
        built = factory(**model["kwargs"])
    except Exception as exc:  # noqa: BLE001 - the user's code: any failure is theirs to fix, named as such
        raise MdbuildError(f"the factory {model['factory']} raised {type(exc).__name__}: {first_line(exc)}", "model.factory",
                           "fix the factory (traceback=true shows where it failed)") from exc
    if not isinstance(built, expected):
        raise MdbuildError(f"the factory {model['factory']} returned {type(built).__name__}, not a {what}", "model.factory",
                           f"return the {what} from the factory")
    return built
