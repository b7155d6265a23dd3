"""Loads and runs an OpenVINO artifact. Standalone on purpose (numpy + openvino only): the build's
verification imports it, and the generated serve.py embeds this same source, so the served model
runs exactly as it was verified."""

from pathlib import Path

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
# The float arithmetic the CPU plugin can compute in, by verification level: its hint, the name in its
# OPTIMIZATION_CAPABILITIES, and in words.
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
_CAPABILITY = {"fp32": "FP32", "fp16": "FP16", "bf16": "BF16"}
WORDS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_LEVELS = {hint: level for level, hint in HINTS.items()}
_CONVERSIONS = ("Const", "Input", "Output", "Reorder", "Convert")


class UnsupportedPrecision(RuntimeError):
    """The CPU cannot compute in any precision the settings allow, or OpenVINO settled on another."""


class LoadedModel:
    """A compiled model ready to run: `inputs` / `outputs` describe its tensors as
    {name: (dtype, shape with None for dynamic sizes)}; `run` maps input arrays to output arrays;
    `compute` says which float arithmetic the plugin really uses on this CPU."""

    def __init__(self, model_path, settings):
        core = openvino.Core()
        device = settings.get("device", "CPU")
        capabilities = list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
        wanted = settings["compute_precisions"]
        chosen = next((p for p in wanted if _CAPABILITY[p] in capabilities), None)
        if chosen is None:
            raise UnsupportedPrecision(f"this {device} computes in none of {', '.join(WORDS[p] for p in wanted)} "
                                       f"(OpenVINO lists {', '.join(capabilities)})")
        config = {"INFERENCE_PRECISION_HINT": HINTS[chosen], "PERFORMANCE_HINT": settings["performance_hint"].upper()}
        if settings.get("streams"):
            config["NUM_STREAMS"] = str(settings["streams"])
        if settings.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(settings["threads"])
        self.compiled = core.compile_model(core.read_model(str(model_path)), device, config)
        self.compute = _computed(self.compiled, wanted, chosen)
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


def _computed(compiled, wanted, chosen):
    """What the plugin computes in: the inference precision it settled on (an unsupported hint falls
    back to its default), refused when the settings do not allow it, with the operations that compute
    on each float type in the compiled graph (what their first input holds; conversions aside)."""
    precision = _LEVELS.get(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
    if precision not in wanted:
        raise UnsupportedPrecision(f"OpenVINO settled on {WORDS.get(precision, precision)} arithmetic, which this "
                                   f"artifact does not allow (only {', '.join(WORDS[p] for p in wanted)})")
    ops = {}
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else node.get_type_name()
        level = _LEVELS.get(node.get_input_element_type(0).get_type_name()) if node.get_input_size() else None
        if layer not in _CONVERSIONS and level:
            ops[level] = ops.get(level, 0) + 1
    words = WORDS[precision]
    if set(ops) - {precision}:
        words += f" ({ops.get(precision, 0)} of {sum(ops.values())} operations; the rest " + \
                 ", ".join(WORDS[p] for p in ops if p != precision) + ")"
    if chosen != wanted[0]:
        words += f", as this CPU has no {WORDS[wanted[0]]} arithmetic"
    return {"precision": precision, "ops": ops, "hint": HINTS[chosen], "requested": list(wanted), "words": words}


def _dims(port):
    shape = port.get_partial_shape()
    return [d.get_length() if d.is_static else None for d in shape]


def load(model_dir, settings):
    return LoadedModel(Path(model_dir) / settings["model_file"], settings)
