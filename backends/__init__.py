"""Target backends, one folder each, discovered: every subpackage's `__init__.py` defines a cheap
`BACKEND` (no SDK import). The folder holds its compile step, a standalone runtime shipped into
artifacts, its `target.options` schema, its optimization steps and its Triton settings."""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from builder.errors import MdbuildError, first_line, missing_extra
from builder.optimize import Optimization
from builder.versions import importable, library_version

_RANGE = re.compile(r"[<>=!~]")


@dataclass(frozen=True)
class Precision:
    """What a target precision means to a backend: the verification level of what the build stores,
    and the levels of the arithmetic its runtime may compute in, first choice first (the runtime takes
    the first the CPU has and reports what it chose). No levels: the runtime runs the graph's own types."""

    stores: str
    computes: tuple[str, ...] = ()


GRAPH_TYPES = {"fp32": Precision("fp32")}


@dataclass(frozen=True)
class NoOptions:
    """A backend without options of its own (target.options stays empty)."""


@dataclass(frozen=True)
class Triton:
    """How Triton serves the compiled model: its backend (and platform), and the `parameters` its
    config.pbtxt carries, from the runtime settings (runtime.json); where it runs (`kind`), the model
    file when it is not Triton's default name, and the GPU execution accelerator with its parameters."""

    backend: str
    platform: str | None = None
    parameters: Callable[[dict[str, Any]], dict[str, str]] | None = None
    kind: str = "KIND_CPU"
    model_file: str | None = None
    accelerator: tuple[str, dict[str, str]] | None = None


@dataclass(frozen=True)
class Backend:
    name: str
    package: str  # the module that must import, e.g. "onnxruntime"
    distribution: str  # its name on PyPI
    extra: str  # the mdbuild extra that installs it
    precisions: dict[str, Precision]  # target.precision -> its meaning here
    compile_version: int
    libraries: tuple[str, ...]  # distributions whose versions go into compile/verify keys
    # Keys compile reads besides target.backend, target.precision and target.options.
    reads: tuple[str, ...] = ()
    options: type = NoOptions  # dataclass: the schema of target.options (conf group target/options)
    optimizations: tuple[Optimization, ...] = ()  # its own optimization steps
    # None: Triton cannot serve it (no config.pbtxt); a function: the settings (runtime.json) decide.
    triton: Triton | Callable[[dict[str, Any]], Triton] | None = None
    # The artifact's runtime distributions, "name" (pinned to this build's version) or "name>=x,<y";
    # () = (distribution,).
    requirements: tuple[str, ...] = ()
    # "module:function" -> {fact: value} of the host the compiled model depends on (GPU model, driver);
    # None: compile gives the same output on any host.
    host: str | None = None
    advice: dict[str, str] = field(default_factory=dict)  # what to try when a level's limits are broken
    converter: str | None = None  # framework targets: the ONNX converter's distribution (= its module)
    # Its steps ("compile", "verify", "package") that run in a fresh process (see builder.execute).
    isolated: tuple[str, ...] = ()
    # Where its runtime cannot run on the build host (TensorRT without a GPU): the runtime module that
    # runs the graph the device computes, loaded with the settings' "proxy" section (see load_here).
    proxy: str | None = None
    # "module:function" -> the host facts of where its runtime runs, which verify's outcome depends on
    # (a GPU, or the proxy on this CPU); None: the CPU's.
    runtime_host: str | None = None
    # "module:function" -> None when its compiled models run on this host, else why not (found without
    # importing an SDK); None: they run wherever the SDK is installed. target=auto builds only these.
    runs_here: str | None = None
    # "module:function" (artifact directory, the model's directory in it, its runtime settings, the package
    # step's config) -> None:
    # writes what another serving system needs beside the model (TensorFlow Serving's models.config).
    serving_files: str | None = None
    # A TorchServe model archive (backends/torchserve.py): None, none; False, with serving.torchserve=true;
    # True, unless serving.torchserve=false.
    torchserve: bool | None = None
    # target config -> the Ray resources a sweep job of it asks for (hydra/launcher=ray_cluster).
    resources: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @property
    def runtime_module(self) -> str:
        """The standalone loader shared by verification and serve.py (numpy + SDK only)."""
        return f"backends.{self.name}.runtime"

    @property
    def pinned(self) -> tuple[str, ...]:
        """The runtime distributions requirements.txt pins to this build's versions."""
        return tuple(r for r in self.requirements or (self.distribution,) if not _RANGE.search(r))

    @property
    def ranges(self) -> tuple[str, ...]:
        """Runtime requirements given as a range (what the serving host needs differs from the build's)."""
        return tuple(r for r in self.requirements if _RANGE.search(r))

    def require(self, where: str) -> None:
        """Fail with the pip extra to install when the SDK (or its converter) cannot be imported here."""
        for package, distribution in ((self.package, self.distribution), (self.converter, self.converter)):
            if package and (not importable(package) or library_version(distribution) is None):
                raise missing_extra(distribution, self.extra, where)

    def unusable_here(self) -> str | None:
        """Why a model compiled for this backend cannot be built and run on this host, or None."""
        try:
            self.require("target.backend")
        except MdbuildError as missing:
            return f"not installed ({missing.fix})"
        if self.runs_here is None:
            return None
        module, function = self.runs_here.split(":")
        return getattr(importlib.import_module(module), function)()

    def write_serving_files(self, out, model_dir: str, settings: dict[str, Any], config: dict[str, Any]) -> None:
        if self.serving_files:
            module, function = self.serving_files.split(":")
            getattr(importlib.import_module(module), function)(out, model_dir, settings, config)

    def compile(self, onnx_path, config: dict[str, Any], out) -> dict[str, Any]:
        return self._compile_module().compile_model(onnx_path, config, out)

    def check(self, config: dict[str, Any]) -> None:
        """Checks the values compile reads (`config` is its node's), at plan time."""
        check = getattr(self._compile_module(), "check", None)
        if check is not None:
            check(config)

    def _compile_module(self):
        return importlib.import_module(f"backends.{self.name}.compile")

    def runtime(self):
        return importlib.import_module(self.runtime_module)

    def triton_for(self, settings: dict[str, Any]) -> Triton | None:
        return self.triton(settings) if callable(self.triton) else self.triton

    def load_here(self, model_dir, settings: dict[str, Any]):
        """(the compiled model on this host, what its proxy ran and the checks left for the target
        device): its own runtime where it runs here (None, []), else its proxy on the graph the device
        computes, with the runtime's `pending(settings)` list."""
        runtime = self.runtime()
        try:
            return runtime.load(model_dir, settings), None, []
        except getattr(runtime, "NotHere", ()) as exc:
            if self.proxy is None:
                raise
            why = first_line(exc)
            proxy = importlib.import_module(self.proxy).load(model_dir, settings["proxy"])
            return proxy, why, runtime.pending(settings)


@dataclass(frozen=True)
class Unavailable:
    """A backend that cannot be built here, with the reason and what to do instead."""

    name: str
    why: str
    fix: str


@functools.lru_cache(maxsize=None)
def discovered() -> dict[str, Backend | Unavailable]:
    found = {}
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            found[module.name] = importlib.import_module(f"{__name__}.{module.name}").BACKEND
    return found


def all_backends() -> list[Backend]:
    return [backend for backend in discovered().values() if isinstance(backend, Backend)]


def get_backend(name: str) -> Backend:
    backend = discovered().get(name)
    if isinstance(backend, Unavailable):
        raise MdbuildError(backend.why, "target.backend", backend.fix)
    if backend is None:
        names = ", ".join(b.name for b in all_backends())
        raise MdbuildError(f"unknown backend '{name}'", "target.backend", f"choose one of: {names}")
    return backend
