from dataclasses import dataclass

from backends import Backend, Precision, Triton
from builder.optimize import Optimization


@dataclass
class OnnxRuntimeOptions:
    # Offline graph optimization saved into the artifact: disabled | basic | extended (the
    # machine-specific "all" level is applied when serve.py loads the model on its host).
    graph_optimization: str = "extended"


@dataclass
class Fp16Options:
    keep_io_types: bool = True  # inputs and outputs stay float32


@dataclass
class OrtQuantizeOptions:
    mode: str = "static"  # static (QDQ, calibrated) | dynamic (weights only, no data)
    per_channel: bool = True
    activation_type: str = "uint8"  # uint8 activations: int8 activations measured 3.5x slower here
    weight_type: str = "int8"
    calibration_method: str = "minmax"  # minmax | entropy | percentile


def triton_parameters(runtime: dict) -> dict[str, str]:
    params = {"inter_op_thread_count": str(runtime["inter_op_threads"])}
    if runtime["intra_op_threads"]:
        params["intra_op_thread_count"] = str(runtime["intra_op_threads"])
    return params


BACKEND = Backend(
    name="onnxruntime",
    package="onnxruntime",
    distribution="onnxruntime",
    extra="onnxruntime",
    precisions={"fp32": Precision("fp32"), "int8": Precision("int8")},
    compile_version=1,
    libraries=("onnxruntime", "onnx"),
    reads=("hardware.intra_op_threads", "hardware.inter_op_threads"),
    options=OnnxRuntimeOptions,
    optimizations=(
        Optimization("fp16", "onnx", "backends.onnxruntime.fp16", 2, ("onnx", "onnxruntime"), loss="fp16",
                     options=Fp16Options),
        Optimization("ort_quantize", "onnx", "backends.onnxruntime.quantize", 1, ("onnx", "onnxruntime"),
                     loss="int8", calibrated=True, options=OrtQuantizeOptions),
    ),
    triton=Triton("onnxruntime", parameters=triton_parameters),
    torchserve=False,  # with serving.torchserve=true
    advice={"fp32": "compare with target.options.graph_optimization=basic",
            "fp16": "keep the inputs and outputs in fp32 (fp16.keep_io_types=true)",
            "int8": "try ort_quantize.calibration_method=entropy or percentile, or ort_quantize.mode=dynamic"},
)
