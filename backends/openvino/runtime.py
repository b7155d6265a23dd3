"""Loads and runs an OpenVINO artifact. Standalone on purpose (numpy + openvino only): the build's
verification imports it, and the generated serve.py embeds this same source, so the served model
runs exactly as it was verified."""

import threading

import numpy as np
import openvino

# OpenVINO's Python binding initialises C++ function-local statics during the first inference of a
# process while holding the GIL: two threads racing through it deadlock the whole process (seen: a
# new server's first 16 concurrent requests). The first inference goes through alone; the others
# wait on this lock, which releases the GIL.
_FIRST_INFERENCE = threading.Lock()
_FIRST_DONE = threading.Event()

_OV_TYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "i64": "int64", "i32": "int32",
             "i8": "int8", "u8": "uint8", "boolean": "bool"}


class LoadedModel:
    """A compiled model ready to run: `inputs` / `outputs` describe its tensors as
    {name: (dtype, shape with None for dynamic sizes)}; `run` maps input arrays to output arrays."""

    def __init__(self, model_path, settings):
        core = openvino.Core()
        config = {
            "INFERENCE_PRECISION_HINT": settings["inference_precision"],
            "PERFORMANCE_HINT": settings["performance_hint"].upper(),
        }
        if settings.get("streams"):
            config["NUM_STREAMS"] = str(settings["streams"])
        if settings.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(settings["threads"])
        self.compiled = core.compile_model(core.read_model(str(model_path)), settings.get("device", "CPU"), config)
        # The precision the plugin really computes in (f16 falls back to f32 on CPUs without it).
        self.effective_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.inputs = {p.get_any_name(): (_OV_TYPES.get(p.get_element_type().get_type_name(), "float32"), _dims(p))
                       for p in self.compiled.inputs}
        self.outputs = {p.get_any_name(): (_OV_TYPES.get(p.get_element_type().get_type_name(), "float32"), _dims(p))
                        for p in self.compiled.outputs}
        self._local = threading.local()

    def run(self, feeds, output_names=None):
        if not _FIRST_DONE.is_set():
            with _FIRST_INFERENCE:
                outputs = self._run(feeds, output_names)
                _FIRST_DONE.set()
                return outputs
        return self._run(feeds, output_names)

    def _run(self, feeds, output_names):
        request = getattr(self._local, "request", None)
        if request is None:  # one infer request per thread: requests are not thread-safe
            request = self._local.request = self.compiled.create_infer_request()
        results = request.infer(feeds)
        by_name = {port.get_any_name(): value for port, value in results.items()}
        return {name: np.array(by_name[name]) for name in (output_names or self.outputs)}


def _dims(port):
    shape = port.get_partial_shape()
    return [d.get_length() if d.is_static else None for d in shape]


def load(model_dir, settings):
    from pathlib import Path

    return LoadedModel(Path(model_dir) / settings["model_file"], settings)
