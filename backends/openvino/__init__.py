from backends import Backend

BACKEND = Backend(
    name="openvino",
    package="openvino",
    distribution="openvino",
    extra="openvino",
    precisions=("fp32", "fp16", "bf16", "int8"),
    runtime_module="backends.openvino.runtime",
    compile_function="backends.openvino.compile:compile_model",
    compile_version=1,
    libraries=("openvino", "onnx"),
)
