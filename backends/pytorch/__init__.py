from backends import GRAPH_TYPES, Backend

# Triton has no backend for a torch.export ExportedProgram: no config.pbtxt.
BACKEND = Backend(
    name="pytorch",
    package="torch",
    distribution="torch",
    extra="torch",
    precisions=GRAPH_TYPES,
    compile_version=1,
    libraries=("torch", "onnx2torch", "onnx"),
    reads=("hardware.intra_op_threads", "model.inputs"),
    converter="onnx2torch",
    torchserve=True,  # torchserve/<recipe>.mar
)
