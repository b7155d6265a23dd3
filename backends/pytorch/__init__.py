from backends import Backend

BACKEND = Backend(
    name="pytorch",
    package="torch",
    distribution="torch",
    extra="torch",
    precisions=("fp32",),
    runtime_module="backends.pytorch.runtime",
    compile_function="backends.pytorch.compile:compile_model",
    compile_version=1,
    libraries=("torch", "onnx2torch", "onnx"),
    converter="onnx2torch",
)
