from backends import GRAPH_TYPES, Backend, Triton


BACKEND = Backend(
    name="tensorflow",
    package="tensorflow",
    distribution="tensorflow",
    extra="tensorflow",
    precisions=GRAPH_TYPES,
    compile_version=2,  # 2: the SavedModel in "1/" (TensorFlow Serving's version directory), was model.savedmodel/
    libraries=("tensorflow", "tf_keras", "onnx2tf", "onnx-graphsurgeon", "sng4onnx", "onnx"),
    reads=("hardware.intra_op_threads", "hardware.inter_op_threads"),
    converter="onnx2tf",
    triton=Triton("tensorflow", platform="tensorflow_savedmodel", model_file="1"),
    serving_files="backends.tensorflow.tf_serving:write",
    # TensorFlow loaded before PyTorch's Triton or MindSpore crashes the interpreter: never in the build's.
    isolated=("compile", "verify", "package"),
)
