"""Loads and runs an ONNX Runtime artifact. Standalone on purpose (numpy + onnxruntime only): the
build's verification imports it, and the generated serve.py embeds this same source, so the served
model runs exactly as it was verified."""

from pathlib import Path

import numpy as np
import onnxruntime

_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


class LoadedModel:
    """A compiled model ready to run: `inputs` / `outputs` describe its tensors as
    {name: (dtype, shape with None for dynamic sizes)}; `run` maps input arrays to output arrays."""

    def __init__(self, model_path, settings):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(settings.get("intra_op_threads", 0))
        options.inter_op_num_threads = int(settings.get("inter_op_threads", 1))
        level = _LEVELS[settings.get("runtime_optimization", "all")]
        options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, level)
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name: (_ORT_TYPES.get(i.type, i.type), _dims(i.shape)) for i in self.session.get_inputs()}
        self.outputs = {o.name: (_ORT_TYPES.get(o.type, o.type), _dims(o.shape)) for o in self.session.get_outputs()}

    def run(self, feeds, output_names=None):
        names = list(output_names or self.outputs)
        values = self.session.run(names, feeds)
        return dict(zip(names, (np.asarray(v) for v in values)))


def _dims(shape):
    return [d if isinstance(d, int) else None for d in shape]


def load(model_dir, settings):
    return LoadedModel(Path(model_dir) / settings["model_file"], settings)
