from backends import Backend, Precision

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
    runtime_module="backends.openvino.runtime",
    compile_function="backends.openvino.compile:compile_model",
    compile_version=1,
    libraries=("openvino", "onnx"),
    # Converting and saving name unnamed nodes from a per-process counter (`Reshape_15` first in a
    # process, `Reshape_27546` after other models): in a fresh process the IR is the same every time.
    isolated=("compile",),
)
