from backends import Backend, Precision

BACKEND = Backend(
    name="onnxruntime",
    package="onnxruntime",
    distribution="onnxruntime",
    extra="onnxruntime",
    precisions={"fp32": Precision("fp32"), "int8": Precision("int8")},
    runtime_module="backends.onnxruntime.runtime",
    compile_function="backends.onnxruntime.compile:compile_model",
    compile_version=1,
    libraries=("onnxruntime", "onnx"),
)
