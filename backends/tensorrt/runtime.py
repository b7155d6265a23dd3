"""Builds and runs TensorRT engines. Standalone on purpose (numpy, a TensorRT SDK and cuda-python only):
compile builds the build host's engines with build_engine, and the generated serve.py embeds this same
source, so on the GPU host it loads the engines, builds a deferred one (serve.py --build-engine) with
the settings the build recorded, and runs them.

Only build_engine runs in this project's tests (TensorRT-RTX builds without a GPU); running an engine
and building one with full TensorRT need an NVIDIA GPU (README, "TensorRT")."""

import hashlib
import importlib
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

# Each flavor's Python modules: full TensorRT's, and TensorRT-RTX's (tensorrt_rtx_bindings from its
# wheels, tensorrt_rtx from its metapackage).
SDK_MODULES = {"tensorrt": ("tensorrt",), "rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings")}
SDK_NAMES = {"tensorrt": "TensorRT", "rtx": "TensorRT-RTX"}
RUNTIME_CACHE = "rtx-runtime.cache"  # TensorRT-RTX's kernels compiled for this GPU, kept between starts
_NUMPY = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "INT8": "int8",
          "UINT8": "uint8", "BOOL": "bool"}


class NotHere(RuntimeError):
    """This host cannot run the artifact's engines: no NVIDIA GPU, no TensorRT, or none for this GPU."""


class UnsupportedGraph(RuntimeError):
    """TensorRT's ONNX parser refused a node: the message names it and its op."""


class BuildFailed(RuntimeError):
    """TensorRT's builder gave no engine: the message holds its errors."""


def import_sdk(flavor):
    for name in SDK_MODULES[flavor]:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def build_engine(flavor, onnx_path, builder, out_path, compute_capabilities=None):
    """Builds a serialized engine from the prepared ONNX graph with the recorded builder settings
    ({"optimization_level", "workspace_mb", "fp32", "shapes": {input: [min, opt, max] shapes}}); its
    precision is the graph's types (a strongly typed network). Returns the SDK's version."""
    trt = import_sdk(flavor)
    if trt is None:
        raise NotHere(f"{SDK_NAMES[flavor]} is not installed here")
    logger = _logger(trt)
    builder_ = trt.Builder(logger)
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder_.create_network(0 if typed is None else 1 << int(typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        error = parser.get_error(0)
        raise UnsupportedGraph(f"{SDK_NAMES[flavor]} cannot parse node '{error.node_name()}' "
                               f"(op {error.node_operator()}): {error.desc().strip()}")
    config = builder_.create_builder_config()
    config.builder_optimization_level = int(builder["optimization_level"])
    if builder["workspace_mb"]:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(builder["workspace_mb"]) << 20)
    if builder["fp32"] and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: no TF32 matrix products
    if builder["shapes"]:
        profile = builder_.create_optimization_profile()
        for name, (low, best, high) in builder["shapes"].items():
            profile.set_shape(name, low, best, high)
        config.add_optimization_profile(profile)
    if compute_capabilities:
        config.num_compute_capabilities = len(compute_capabilities)
        for index, capability in enumerate(compute_capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + capability.replace(".", "")), index)
    plan = builder_.build_serialized_network(network, config)
    if plan is None:
        raise BuildFailed(f"{SDK_NAMES[flavor]} could not build the engine: " + ("; ".join(logger.errors) or "no reason given"))
    Path(out_path).write_bytes(bytes(plan))
    return trt.__version__


def _logger(trt):
    class Collecting(trt.ILogger):
        """Keeps the builder's errors for the message; prints nothing."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, message):
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(message.strip())

    return Collecting()


def local_gpu():
    """(name, compute capability) of CUDA device 0; NotHere without cuda-python, a driver or a GPU."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise NotHere("no NVIDIA GPU here (cuda-python is not installed)") from None
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess or count == 0:
        raise NotHere("no NVIDIA GPU here" + (f" (CUDA: {error.name})" if error != cudart.cudaError_t.cudaSuccess else ""))
    error, properties = cudart.cudaGetDeviceProperties(0)
    if error != cudart.cudaError_t.cudaSuccess:
        raise NotHere(f"no NVIDIA GPU here (CUDA: {error.name})")
    name = properties.name.decode(errors="replace").rstrip("\x00") if isinstance(properties.name, bytes) else str(properties.name)
    return name, f"{properties.major}.{properties.minor}"


def built_here_path(model_dir, gpu):
    """Where serve.py --build-engine keeps the full TensorRT engine it built for this GPU."""
    slug = "".join(c if c.isalnum() else "-" for c in gpu[0]).strip("-").lower()
    return Path(model_dir) / f"model.tensorrt.{slug}.sm{gpu[1].replace('.', '')}.engine"


def build(model_dir, settings, required):
    """The deferred build: on a GPU host with full TensorRT, builds the engine for this GPU once, beside
    the model, with the builder settings the build recorded (again when the graph, the settings or the
    TensorRT version changed). Returns the path of an engine that still needs its self-test (built now,
    or built earlier and never accepted), else None; `required` (serve.py --build-engine) turns "cannot
    build here" into NotHere instead of None."""
    deferred = settings.get("deferred")
    if not deferred:
        if required:
            raise NotHere("this artifact has no deferred engine build (its engines were built with it)")
        return None
    try:
        gpu = local_gpu()
    except NotHere:
        if required:
            raise
        return None
    trt = import_sdk("tensorrt")
    if trt is None:
        if required:
            raise NotHere("full TensorRT is not installed here: pip install " + deferred["install"])
        return None
    path = built_here_path(model_dir, gpu)
    onnx_path = Path(model_dir) / settings["model_file"]
    wanted = {"gpu": gpu[0], "compute_capability": gpu[1], "tensorrt": trt.__version__,
              "onnx_sha256": _sha256(onnx_path), "builder": settings["builder"]}
    record = _recorded(path)
    if record is not None and {key: record.get(key) for key in wanted} == wanted:
        return None if record.get("selftest") == "passed" else path
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # two replicas may build at once
    try:
        build_engine("tensorrt", onnx_path, settings["builder"], partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    _write_record(path, {**wanted, "engine_sha256": _sha256(path), "selftest": None})
    return path


def accept(path):
    """Marks an engine built here as self-tested: later starts serve it without testing it again."""
    _write_record(path, {**_recorded(path), "selftest": "passed"})


def reject(path):
    """Moves aside an engine that failed its self-test, so no later start serves it."""
    path = Path(path)
    for file in (path, path.with_suffix(".json")):
        if file.exists():
            file.replace(file.with_name(file.name + ".rejected"))


def _write_record(path, record):
    partial = path.with_name(f"{path.name}.{os.getpid()}.json.partial")
    partial.write_text(json.dumps(record, indent=2))
    partial.replace(path.with_suffix(".json"))


def pending(settings):
    """The checks the build host could not run (it verified the prepared graph with ONNX Runtime CPU)."""
    checks = ["engine outputs against the stored reference on the target GPU (serve.py --selftest there)",
              "latency on the target GPU"]
    if settings.get("deferred"):
        checks.insert(0, "the full TensorRT engine build on the target GPU (serve.py --build-engine there)")
    return checks


def load(model_dir, settings):
    """The engine this GPU runs: a full TensorRT engine built for it (here or by the build), else the
    RTX engine where this GPU's compute capability is among those it was built for."""
    model_dir = Path(model_dir)
    gpu = local_gpu()
    reasons = []
    full = import_sdk("tensorrt")
    if full is not None:
        path = built_here_path(model_dir, gpu)
        record = _recorded(path)
        if record is not None:
            if record.get("engine_sha256") != _sha256(path):
                raise NotHere(f"{path.name} does not match the sha256 recorded when it was built: rebuild it "
                              "(serve.py --build-engine)")
            return EngineModel(full, path, f"TensorRT {record['tensorrt']} engine on {gpu[0]}")
        for engine in settings["engines"]:
            if engine["flavor"] == "tensorrt" and (engine["gpu"], engine["compute_capability"]) == gpu:
                return EngineModel(full, model_dir / engine["file"], f"TensorRT engine on {gpu[0]}")
        if settings.get("deferred"):
            reasons.append("no TensorRT engine for this GPU yet (serve.py --build-engine builds it)")
    elif settings.get("deferred"):
        reasons.append(f"full TensorRT is not installed here: pip install {settings['deferred']['install']}, then "
                       "serve.py --build-engine builds this GPU's engine")
    for engine in settings["engines"]:
        if engine["flavor"] != "rtx":
            continue
        if gpu[1] not in engine["compute_capabilities"]:
            reasons.append(f"the RTX engine runs on compute capability {', '.join(engine['compute_capabilities'])}")
        elif import_sdk("rtx") is None:
            reasons.append("TensorRT-RTX is not installed here (requirements.txt)")
        else:
            return EngineModel(import_sdk("rtx"), model_dir / engine["file"], f"TensorRT-RTX engine on {gpu[0]}",
                               runtime_cache=model_dir / RUNTIME_CACHE)
    raise NotHere(f"this GPU ({gpu[0]}, compute capability {gpu[1]}) runs none of this artifact's engines: "
                  + ("; ".join(reasons) or "it has none"))


def _recorded(path):
    record = path.with_suffix(".json")
    return json.loads(record.read_text()) if path.is_file() and record.is_file() else None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class EngineModel:
    """A deserialized engine on CUDA device 0. `inputs` / `outputs` describe its tensors as {name:
    (dtype, shape with None for dynamic sizes)}; `run` copies the inputs in, executes and copies the
    outputs back; `close` frees the device memory. One execution context: runs take turns."""

    compute = None  # the engine computes in its graph's types

    def __init__(self, trt, path, description, runtime_cache=None):
        from cuda.bindings import runtime as cudart

        self._cudart = cudart
        self.description = description
        self._runtime = trt.Runtime(_logger(trt))
        self.engine = self._runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise NotHere(f"{description}: the engine does not load (built by another TensorRT version?): rebuild it "
                          "with serve.py --build-engine, or rebuild the artifact")
        self._cache = self._config = None
        self._cache_path = runtime_cache
        if runtime_cache is not None and hasattr(self.engine, "create_runtime_config"):
            self._config = self.engine.create_runtime_config()  # kept: the context uses it
            self._cache = self._config.create_runtime_cache()
            if Path(runtime_cache).is_file():
                self._cache.deserialize(Path(runtime_cache).read_bytes())  # False for another GPU or version: starts empty
            self._config.set_runtime_cache(self._cache)
            self.context = self.engine.create_execution_context(self._config)
        else:
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        described = {name: (self._dtype(name), [None if d < 0 else d for d in self.engine.get_tensor_shape(name)])
                     for name in names}
        self.inputs = {n: d for n, d in described.items() if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        self.outputs = {n: d for n, d in described.items() if n not in self.inputs}
        self._profiles = {name: self.engine.get_tensor_profile_shape(name, 0) for name in self.inputs
                          if None in self.inputs[name][1]}
        self._stream = self._check(cudart.cudaStreamCreate())
        self._buffers = {}  # tensor name -> (device pointer, bytes)
        self._shapes = set()  # input shapes run so far: a new one may compile new RTX kernels
        self._lock = threading.Lock()

    def _dtype(self, name):
        kind = self.engine.get_tensor_dtype(name).name
        if kind not in _NUMPY:
            raise NotHere(f"{self.description}: tensor '{name}' has type {kind}, which this server does not exchange")
        return _NUMPY[kind]

    def _check(self, result):
        error, *values = result if isinstance(result, tuple) else (result,)
        if error != self._cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error {error.name}")
        return values[0] if values else None

    def _buffer(self, name, nbytes):
        pointer, size = self._buffers.get(name, (None, 0))
        if size < nbytes:
            if pointer is not None:
                self._check(self._cudart.cudaFree(pointer))
            pointer = self._check(self._cudart.cudaMalloc(max(nbytes, 1)))
            self._buffers[name] = (pointer, nbytes)
        self.context.set_tensor_address(name, int(pointer))
        return pointer

    def run(self, feeds, output_names=None):
        cudart, copy = self._cudart, self._cudart.cudaMemcpyKind
        with self._lock:
            arrays = {}
            for name, (dtype, _) in self.inputs.items():
                array = arrays[name] = np.ascontiguousarray(feeds[name], dtype=dtype)
                if not self.context.set_input_shape(name, array.shape):
                    low, _, high = self._profiles.get(name, (None, None, None))
                    raise ValueError(f"input '{name}' of shape {list(array.shape)} is outside the engine's optimization "
                                     f"profile ({list(low) if low else '?'} to {list(high) if high else '?'})")
                pointer = self._buffer(name, array.nbytes)
                self._check(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                                   copy.cudaMemcpyHostToDevice, self._stream))
            results = {}
            for name, (dtype, _) in self.outputs.items():
                results[name] = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype)
                self._buffer(name, results[name].nbytes)
            if not self.context.execute_async_v3(int(self._stream)):
                raise RuntimeError(f"{self.description}: execution failed")
            for name, array in results.items():
                self._check(cudart.cudaMemcpyAsync(array.ctypes.data, self._buffers[name][0], array.nbytes,
                                                   copy.cudaMemcpyDeviceToHost, self._stream))
            self._check(cudart.cudaStreamSynchronize(self._stream))
            self._save_runtime_cache(tuple(array.shape for array in arrays.values()))
        return {name: results[name] for name in (output_names or self.outputs)}

    def _save_runtime_cache(self, shapes):
        """After the first run of each input shape (TensorRT-RTX may have compiled kernels for it); a
        read-only artifact keeps running without it."""
        if self._cache is None or shapes in self._shapes:
            return
        self._shapes.add(shapes)
        partial = Path(f"{self._cache_path}.{os.getpid()}.partial")
        try:
            partial.write_bytes(bytes(self._cache.serialize()))
            partial.replace(self._cache_path)
        except OSError as exc:
            sys.stderr.write(f"warning: the TensorRT-RTX runtime cache cannot be kept ({exc})\n")

    def close(self):
        """Frees the device buffers and the stream."""
        with self._lock:
            for pointer, _ in self._buffers.values():
                self._cudart.cudaFree(pointer)
            self._buffers.clear()
            if self._stream is not None:
                self._cudart.cudaStreamDestroy(self._stream)
                self._stream = None
