from dataclasses import dataclass

from backends import Backend, Precision, Triton
from builder.optimize import Optimization


@dataclass
class OpenVINOOptions:
    performance_hint: str = "latency"  # PERFORMANCE_HINT: latency | throughput
    streams: int = 0  # NUM_STREAMS; 0: from the hint


@dataclass
class NncfQuantizeOptions:
    range_estimator: str = "minmax"  # minmax | default (NNCF's own, which clipped outliers on ResNet-50)
    preset: str = "performance"  # performance | mixed
    # NNCF's model type: auto (transformer when an input holds token ids or a mask) | transformer | default
    model_type: str = "auto"


def triton_parameters(runtime: dict) -> dict[str, str]:
    # Triton hands the hint to the plugin as it is: one that never falls back to arithmetic the target
    # does not allow on any CPU (fp16 computes in float32 under Triton; see compile.fixed_hint).
    params = {"INFERENCE_PRECISION_HINT": runtime["fixed_hint"], "PERFORMANCE_HINT": runtime["performance_hint"].upper()}
    if runtime["streams"]:
        params["NUM_STREAMS"] = str(runtime["streams"])
    if runtime["threads"]:
        params["INFERENCE_NUM_THREADS"] = str(runtime["threads"])
    return params


BACKEND = Backend(
    name="openvino",
    package="openvino",
    distribution="openvino",
    extra="openvino",
    # Every arithmetic list ends in fp32 and holds no precision the target does not name: left alone,
    # the CPU plugin computes in bf16 on CPUs that have it (for an fp32 model, and for an f16 hint on a
    # CPU without f16 arithmetic). bf16 stores the fp32 IR; the int8 ops come from nncf_quantize.
    precisions={
        "fp32": Precision("fp32", ("fp32",)),
        "fp16": Precision("fp16", ("fp16", "fp32")),
        "bf16": Precision("fp32", ("bf16", "fp32")),
        "int8": Precision("int8", ("fp32",)),
    },
    compile_version=1,
    libraries=("openvino", "onnx"),
    reads=("hardware.intra_op_threads",),
    options=OpenVINOOptions,
    # In a fresh process: OpenVINO names new nodes from a per-process counter (`Reshape_15` first in a
    # process, `Reshape_27546` after other models), so only a fresh process gives the same IR every time.
    optimizations=(
        Optimization("nncf_quantize", "compiled", "backends.openvino.quantize", 2, ("nncf", "openvino"),
                     loss="int8", calibrated=True, isolated=True, options=NncfQuantizeOptions),
    ),
    triton=Triton("openvino", parameters=triton_parameters),
    advice={"int8": "try nncf_quantize.range_estimator=default or nncf_quantize.preset=mixed"},
    isolated=("compile",),
)
