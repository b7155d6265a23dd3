"""Target backends. Each subpackage exposes a `BACKEND` description that is cheap to import; the
functions that touch the SDK live in its submodules and are imported only when a step runs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from builder.errors import MdbuildError, missing_extra
from builder.versions import importable, library_version


@dataclass(frozen=True)
class Backend:
    name: str
    package: str  # the module that must import, e.g. "onnxruntime"
    distribution: str  # its name on PyPI, pinned into the artifact's requirements.txt
    extra: str  # the mdbuild extra that installs it
    precisions: tuple[str, ...]
    runtime_module: str  # standalone loader shared by verification and serve.py (numpy + SDK only)
    compile_function: str  # "module:function" that writes the compiled model
    compile_version: int
    libraries: tuple[str, ...]  # distributions whose versions go into compile/verify keys

    def require(self, where: str) -> None:
        """Fail with the pip extra to install when the SDK cannot be imported here."""
        if not importable(self.package) or library_version(self.distribution) is None:
            raise missing_extra(self.distribution, self.extra, where)

    def compile(self, *args, **kwargs):
        module, function = self.compile_function.split(":")
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    def runtime(self):
        return importlib.import_module(self.runtime_module)


_BACKENDS = ("onnxruntime", "openvino")


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        raise MdbuildError(
            f"unknown backend '{name}'", "target.backend", f"choose one of: {', '.join(_BACKENDS)}"
        )
    return importlib.import_module(f"backends.{name}").BACKEND
