from backends import GRAPH_TYPES, Backend, Triton


def tf_serving(recipe: str, model_dir: str) -> dict[str, str]:
    """TensorFlow Serving's model config for the artifact: the SavedModel (model_dir/1) is version 1 of the
    base path model_dir, relative to the artifact directory (give the server an absolute path to it)."""
    return {"tf_serving/models.config": (
        "model_config_list {\n  config {\n"
        f'    name: "{recipe}"\n    base_path: "{model_dir}"\n    model_platform: "tensorflow"\n'
        "    model_version_policy { specific { versions: 1 } }\n  }\n}\n")}



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
    serving_files=tf_serving,
    # TensorFlow loaded before PyTorch's Triton or MindSpore crashes the interpreter: never in the build's.
    isolated=("compile", "verify", "package"),
)
