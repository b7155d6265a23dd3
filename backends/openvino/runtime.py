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
# Float arithmetic the CPU plugin can compute in: its OPTIMIZATION_CAPABILITIES name, and in words.
_CAPABILITY = {"f32": "FP32", "f16": "FP16", "bf16": "BF16"}
WORDS = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
_LEAST_PRECISE_FIRST = ("bf16", "f16", "f32")
_NOT_COMPUTED = ("Const", "Input", "Output")


class LoadedModel:
    """A compiled model ready to run: `inputs` / `outputs` describe its tensors as
    {name: (dtype, shape with None for dynamic sizes)}; `run` maps input arrays to output arrays;
    `compute` says which float arithmetic the plugin really uses on this CPU."""

    def __init__(self, model_path, settings):
        core = openvino.Core()
        device = settings.get("device", "CPU")
        capabilities = list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
        wanted = settings["compute_precisions"]
        hint = next((p for p in wanted if _CAPABILITY[p] in capabilities), None)
        if hint is None:
            raise RuntimeError(f"this {device} computes in none of {', '.join(WORDS[p] for p in wanted)} "
                               f"(OpenVINO lists {', '.join(capabilities)}); rebuild for a precision it has")
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": settings["performance_hint"].upper()}
        if settings.get("streams"):
            config["NUM_STREAMS"] = str(settings["streams"])
        if settings.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(settings["threads"])
        self.compiled = core.compile_model(core.read_model(str(model_path)), device, config)
        self.compute = _computed(self.compiled, wanted, hint, capabilities)
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


def _computed(compiled, wanted, hint, capabilities):
    """What the plugin computes in, read from the compiled graph (each executed node's output
    precision), not from the hint; a float type the settings do not allow is refused."""
    ops = {}
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        if info["layerType"].astype(str) in _NOT_COMPUTED:
            continue
        for precision in info["outputPrecisions"].astype(str).split(","):
            if precision.strip() in WORDS:
                ops[precision.strip()] = ops.get(precision.strip(), 0) + 1
    precision = next((p for p in _LEAST_PRECISE_FIRST if p in ops), "f32")
    if precision not in wanted:
        raise RuntimeError(f"OpenVINO computes {ops[precision]} operations in {WORDS[precision]}, which these settings "
                           f"do not allow (only {', '.join(WORDS[p] for p in wanted)})")
    words = WORDS[precision]
    if len(ops) > 1:
        words += f" ({ops[precision]} of {sum(ops.values())} operations; the rest " + \
                 ", ".join(WORDS[p] for p in ops if p != precision) + ")"
    if hint != wanted[0]:
        words += f", as this CPU has no {WORDS[wanted[0]]} arithmetic"
    return {"precision": precision, "ops": ops, "hint": hint, "requested": list(wanted), "capabilities": capabilities,
            "words": words}


def _dims(port):
    shape = port.get_partial_shape()
    return [d.get_length() if d.is_static else None for d in shape]


def load(model_dir, settings):
    from pathlib import Path

    return LoadedModel(Path(model_dir) / settings["model_file"], settings)
