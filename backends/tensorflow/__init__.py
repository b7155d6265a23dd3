from backends import GRAPH_TYPES, Backend

BACKEND = Backend(
    name="tensorflow",
    package="tensorflow",
    distribution="tensorflow",
    extra="tensorflow",
    precisions=GRAPH_TYPES,
    runtime_module="backends.tensorflow.runtime",
    compile_function="backends.tensorflow.compile:compile_model",
    compile_version=1,
    libraries=("tensorflow", "tf_keras", "onnx2tf", "onnx-graphsurgeon", "sng4onnx", "onnx"),
    converter="onnx2tf",
    isolated=("compile", "verify", "package"),
)
