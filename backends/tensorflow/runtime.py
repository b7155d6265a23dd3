"""Loads and runs a TensorFlow artifact (a SavedModel's serving signature). Standalone on purpose
(numpy + tensorflow only): the build's verification imports it, and the generated serve.py embeds
this same source, so the served model runs exactly as it was verified."""

from pathlib import Path

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, not its errors

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


class LoadedModel:
    """A compiled model ready to run: `inputs` / `outputs` describe its tensors as
    {name: (dtype, shape with None for dynamic sizes)}; `run` maps input arrays to output arrays."""

    def __init__(self, model_path, settings):
        if settings.get("intra_op_threads") and not tf.config.threading.get_intra_op_parallelism_threads():
            try:  # only possible before TensorFlow's runtime has started in this process
                tf.config.threading.set_intra_op_parallelism_threads(int(settings["intra_op_threads"]))
                tf.config.threading.set_inter_op_parallelism_threads(int(settings.get("inter_op_threads") or 1))
            except RuntimeError:
                pass
        self.saved = tf.saved_model.load(str(model_path))
        self.function = self.saved.signatures["serving_default"]
        self.inputs = {name: (dtype, dims) for name, dtype, dims in settings["inputs"]}
        self.outputs = {name: (dtype, dims) for name, dtype, dims in settings["outputs"]}

    def run(self, feeds, output_names=None):
        names = list(output_names or self.outputs)
        result = self.function(**{name: tf.constant(np.ascontiguousarray(feeds[name])) for name in self.inputs})
        return {name: result[name].numpy() for name in names}


def load(model_dir, settings):
    return LoadedModel(Path(model_dir) / settings["model_file"], settings)
