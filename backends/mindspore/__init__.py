"""MindSpore as a target cannot be built (README "ONNX -> MindSpore" has the commands and errors)."""

from backends import Unavailable

BACKEND = Unavailable(
    name="mindspore",
    why="no installable converter turns ONNX into MindSpore: mindconverter 1.7.0 (its last release) pins "
        "networkx==2.5, which torch and nncf exclude, and rejects every operator of current ONNX exports; "
        "mindspore-lite's converter has no wheel for this Python; MindSpore 2.10 only exports ONNX",
    fix="deploy MindSpore models with target=onnxruntime_*, openvino_*, pytorch or tensorflow "
        "(model.source=mindspore is supported)",
)
