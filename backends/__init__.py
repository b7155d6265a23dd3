"""Target backends. Each subpackage exposes a `BACKEND` description that is cheap to import; the
functions that touch the SDK live in its submodules and are imported only when a step runs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from builder.errors import MdbuildError, missing_extra
from builder.versions import importable, library_version


@dataclass(frozen=True)
class Precision:
    """What a target precision means to a backend: the verification level of what the build stores,
    and the levels of the arithmetic its runtime may compute in, first choice first (the runtime takes
    the first the CPU has and reports what it chose). No levels: the runtime runs the graph's own types."""

    stores: str
    computes: tuple[str, ...] = ()


GRAPH_TYPES = {"fp32": Precision("fp32")}


@dataclass(frozen=True)
class Backend:
    name: str
    package: str  # the module that must import, e.g. "onnxruntime"
    distribution: str  # its name on PyPI, pinned into the artifact's requirements.txt
    extra: str  # the mdbuild extra that installs it
    precisions: dict[str, Precision]  # target.precision -> its meaning here
    runtime_module: str  # standalone loader shared by verification and serve.py (numpy + SDK only)
    compile_function: str  # "module:function" that writes the compiled model
    compile_version: int
    libraries: tuple[str, ...]  # distributions whose versions go into compile/verify keys
    converter: str | None = None  # framework targets: the ONNX converter's distribution (= its module)
    # Its steps ("compile", "verify", "package") that run in a fresh process (see builder.execute): all of
    # TensorFlow's; OpenVINO's compile, whose IR names nodes from a per-process counter.
    isolated: tuple[str, ...] = ()

    def require(self, where: str) -> None:
        """Fail with the pip extra to install when the SDK (or its converter) cannot be imported here."""
        for package, distribution in ((self.package, self.distribution), (self.converter, self.converter)):
            if package and (not importable(package) or library_version(distribution) is None):
                raise missing_extra(distribution, self.extra, where)

    def compile(self, *args, **kwargs):
        module, function = self.compile_function.split(":")
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    def runtime(self):
        return importlib.import_module(self.runtime_module)


_BACKENDS = ("onnxruntime", "openvino", "pytorch", "tensorflow")
# Targets that cannot be built, with the reason (README "ONNX -> MindSpore" has the commands and errors).
_UNAVAILABLE = {
    "mindspore": (
        "no installable converter turns ONNX into MindSpore: mindconverter 1.7.0 (its last release) pins "
        "networkx==2.5, which torch and nncf exclude, and rejects every operator of current ONNX exports; "
        "mindspore-lite's converter has no wheel for this Python; MindSpore 2.10 only exports ONNX",
        "target.backend",
        "deploy MindSpore models with target=onnxruntime_*, openvino_*, pytorch or tensorflow "
        "(model.source=mindspore is supported)",
    ),
}


def get_backend(name: str) -> Backend:
    if name in _UNAVAILABLE:
        raise MdbuildError(*_UNAVAILABLE[name])
    if name not in _BACKENDS:
        raise MdbuildError(
            f"unknown backend '{name}'", "target.backend", f"choose one of: {', '.join(_BACKENDS)}"
        )
    return importlib.import_module(f"backends.{name}").BACKEND
