"""TensorRT: precision is the ONNX graph's types (TensorRT 11 and TensorRT-RTX are strongly typed). An
optimization step prepares the graph (trt_fp16: mixed precision; trt_quantize: explicit Q/DQ), the
build host verifies that graph with ONNX Runtime CPU, and compile builds the engines this host can
build: an RTX engine anywhere, a full TensorRT engine on the GPU it will run on, or, without that GPU,
the exact builder settings for serve.py --build-engine on the GPU host (a deferred build)."""

from dataclasses import dataclass, field
from typing import Dict, List

from backends import Backend, Precision, Triton
from builder.optimize import Optimization

FLAVORS = ("auto", "tensorrt", "rtx")
# What TensorRT-RTX 1.7 builds for (its ComputeCapability enum): Turing, Ampere, Ada, Blackwell. No
# data-center Hopper (9.0) or Blackwell (10.x): those GPUs need full TensorRT.
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
GPU_FAMILIES = {"7.5": "Turing: GeForce RTX 20, Quadro RTX, T4", "8.0": "Ampere: A100, A30",
                "8.6": "Ampere: GeForce RTX 30, RTX A2000-A6000, A10, A40", "8.9": "Ada: GeForce RTX 40, RTX Ada, L4, L40",
                "12.0": "Blackwell: GeForce RTX 50, RTX PRO", "12.1": "Blackwell: GB10"}


@dataclass
class TensorRTOptions:
    flavor: str = "auto"  # auto | tensorrt | rtx (see the README, "TensorRT")
    # rtx: the GPUs the engine runs on, by compute capability.
    compute_capabilities: List[str] = field(default_factory=lambda: ["8.0", "8.6", "8.9", "12.0"])
    workspace_mb: int = 0  # the builder's workspace pool; 0: TensorRT's default (the GPU's memory)
    optimization_level: int = 3  # builder optimization level, 0 (fastest build) to 5
    # Optimization profile per dynamic dimension: [min, opt, max]. Default: the batch dimension
    # [1, model.dims, max(model.dims, serving.max_batch_size, verify.sizes)], any other [1, model.dims, model.dims].
    profiles: Dict[str, List[int]] = field(default_factory=dict)


@dataclass
class TrtFp16Options:
    keep_io_types: bool = True  # inputs and outputs stay float32
    # A node whose outputs exceed this magnitude on sample inputs stays fp32 (float16's largest value is
    # 65504, and above 512 its step is 0.5 or more; NVIDIA Model Optimizer's AutoCast uses 512 too).
    max_abs: float = 512.0


@dataclass
class TrtQuantizeOptions:
    per_channel: bool = True  # per-channel weight scales (TensorRT's preferred form)
    calibration_method: str = "minmax"  # minmax | entropy | percentile


def triton(runtime: dict) -> Triton:
    """Triton's TensorRT backend for a full TensorRT engine (it cannot load RTX engines); otherwise its
    ONNX Runtime backend on the prepared graph with the TensorRT execution accelerator, which builds
    the engine on the GPU at the graph's precision."""
    full = [engine for engine in runtime["engines"] if engine["flavor"] == "tensorrt"]
    if full:
        return Triton("tensorrt", platform="tensorrt_plan", kind="KIND_GPU", model_file=full[0]["file"])
    parameters = {"precision_mode": runtime["precision"].upper()}
    if runtime["builder"]["workspace_mb"]:
        parameters["max_workspace_size_bytes"] = str(runtime["builder"]["workspace_mb"] << 20)
    return Triton("onnxruntime", kind="KIND_GPU", model_file=runtime["model_file"], accelerator=("tensorrt", parameters))


def resources(target: dict) -> dict:
    """A full-TensorRT build compiles on the GPU its engine runs on: its sweep job asks Ray for one."""
    return {"num_gpus": 1} if (target.get("options") or {}).get("flavor") == "tensorrt" else {}


BACKEND = Backend(
    name="tensorrt",
    # The build host needs ONNX Runtime (it verifies the prepared graph); the engine SDKs are checked
    # by target.options.flavor (compile.check).
    package="onnxruntime",
    distribution="onnxruntime",
    extra="tensorrt-rtx",
    precisions={"fp32": Precision("fp32"), "fp16": Precision("fp16"), "int8": Precision("int8")},
    compile_version=1,
    libraries=("onnx", "onnxruntime", "tensorrt-rtx-cu12-bindings", "tensorrt-rtx-cu12-libs",
               "tensorrt-cu12-bindings", "tensorrt-cu12-libs"),
    reads=("model.inputs", "model.dims", "serving.max_batch_size", "verify.sizes"),
    options=TensorRTOptions,
    optimizations=(
        Optimization("trt_fp16", "onnx", "backends.tensorrt.fp16", 1, ("onnx", "onnxruntime", "numpy"), loss="fp16",
                     calibrated=True, options=TrtFp16Options),
        Optimization("trt_quantize", "onnx", "backends.tensorrt.quantize", 1, ("onnx", "onnxruntime"), loss="int8",
                     calibrated=True, options=TrtQuantizeOptions),
    ),
    triton=triton,
    # cuda-python 12.x runs on CUDA 12 drivers (>= 525); 13.x needs a driver >= 580.
    requirements=("cuda-bindings>=12.8,<13", "tensorrt-rtx-cu12-bindings", "tensorrt-rtx-cu12-libs"),
    host="backends.tensorrt.host:facts",
    proxy="backends.onnxruntime.runtime",
    runtime_host="backends.tensorrt.host:runtime_facts",
    runs_here="backends.tensorrt.host:runs_here",
    resources=resources,
    advice={"fp16": "keep more operations in fp32, or build tensorrt_fp32",
            "int8": "try trt_quantize.calibration_method=entropy or percentile, or build tensorrt_fp16"},
)
