from backends import Backend

BACKEND = Backend(
    name="tensorflow",
    package="tensorflow",
    distribution="tensorflow",
    extra="tensorflow",
    precisions=("fp32",),
    runtime_module="backends.tensorflow.runtime",
    compile_function="backends.tensorflow.compile:compile_model",
    compile_version=1,
    libraries=("tensorflow", "onnx2tf", "onnx"),
    converter="onnx2tf",
    isolated=True,
)
