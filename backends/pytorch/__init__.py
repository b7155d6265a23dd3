from backends import GRAPH_TYPES, Backend

BACKEND = Backend(
    name="pytorch",
    package="torch",
    distribution="torch",
    extra="torch",
    precisions=GRAPH_TYPES,
    runtime_module="backends.pytorch.runtime",
    compile_function="backends.pytorch.compile:compile_model",
    compile_version=1,
    libraries=("torch", "onnx2torch", "onnx"),
    converter="onnx2torch",
)
