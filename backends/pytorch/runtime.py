"""Loads and runs a PyTorch artifact (an ExportedProgram, model.pt2, or TorchScript, model.pt). Standalone on purpose (numpy + torch only): the
build's verification imports it, and the generated serve.py embeds this same source, so the served
model runs exactly as it was verified."""

from pathlib import Path

import numpy as np
import torch


class LoadedModel:
    """A compiled model ready to run: `inputs` / `outputs` describe its tensors as
    {name: (dtype, shape with None for dynamic sizes)}; `run` maps input arrays to output arrays."""

    def __init__(self, model_path, settings):
        if settings.get("intra_op_threads"):
            torch.set_num_threads(int(settings["intra_op_threads"]))
        if str(model_path).endswith(".pt2"):
            self.module = torch.export.load(str(model_path)).module()
        else:
            self.module = torch.jit.load(str(model_path), map_location="cpu").eval()
        self.inputs = {name: (dtype, dims) for name, dtype, dims in settings["inputs"]}
        self.outputs = {name: (dtype, dims) for name, dtype, dims in settings["outputs"]}

    def run(self, feeds, output_names=None):
        names = list(output_names or self.outputs)
        arguments = [torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in self.inputs]
        with torch.inference_mode():
            result = self.module(*arguments)
        if isinstance(result, torch.Tensor):
            result = (result,)
        values = dict(zip(self.outputs, result))
        return {name: values[name].numpy() for name in names}


def load(model_dir, settings):
    return LoadedModel(Path(model_dir) / settings["model_file"], settings)
