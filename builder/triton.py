"""A Triton Inference Server model repository for the artifact: config.pbtxt beside the version
folder that holds the model, for Triton's onnxruntime, openvino or tensorflow backend. Triton has no
backend for a torch.export ExportedProgram or for MindSpore: those artifacts get no config.pbtxt."""

from __future__ import annotations

from typing import Any

_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
          "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
_BACKENDS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorflow": "tensorflow"}
_PLATFORMS = {"tensorflow": "tensorflow_savedmodel"}


def serves(backend: str) -> bool:
    return backend in _BACKENDS


def config_pbtxt(name: str, backend: str, inputs: dict[str, tuple[str, list]], outputs: dict[str, tuple[str, list]],
                 runtime: dict[str, Any], serving: dict[str, Any]) -> str:
    """Batched along the first dimension when every tensor's first dimension is dynamic."""
    batched = all(dims and dims[0] is None for _, dims in [*inputs.values(), *outputs.values()])
    max_batch = max(1, serving["max_batch_size"]) if batched else 0

    def tensors(kind: str, items: dict[str, tuple[str, list]]) -> list[str]:
        lines = [f"{kind} ["]
        for index, (tensor, (dtype, dims)) in enumerate(items.items()):
            shown = dims[1:] if batched else dims
            shape = ", ".join("-1" if d is None else str(d) for d in shown)
            comma = "," if index < len(items) - 1 else ""
            lines.append(f'  {{ name: "{tensor}" data_type: {_TYPES[dtype]} dims: [ {shape} ] }}{comma}')
        return lines + ["]"]

    lines = [f'name: "{name}"', f'backend: "{_BACKENDS[backend]}"']
    if backend in _PLATFORMS:
        lines += [f'platform: "{_PLATFORMS[backend]}"']
    lines += [f"max_batch_size: {max_batch}"]
    lines += tensors("input", inputs) + tensors("output", outputs)
    lines += ["instance_group [ { kind: KIND_CPU count: 1 } ]"]
    if batched and serving["max_batch_size"] > 1:
        delay_us = int(serving["max_queue_delay_ms"] * 1000)
        lines += [f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}"]
    for key, value in _parameters(backend, runtime).items():
        lines += [f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}']
    return "\n".join(lines) + "\n"


def _parameters(backend: str, runtime: dict[str, Any]) -> dict[str, str]:
    if backend == "tensorflow":
        return {}
    if backend == "onnxruntime":
        params = {"inter_op_thread_count": str(runtime["inter_op_threads"])}
        if runtime["intra_op_threads"]:
            params["intra_op_thread_count"] = str(runtime["intra_op_threads"])
        return params
    # Triton hands the hint to the plugin as it is: one that never falls back to arithmetic the target does
    # not allow on any CPU (fp16 computes in float32 under Triton; see backends/openvino/compile.py).
    params = {"INFERENCE_PRECISION_HINT": runtime["fixed_hint"],
              "PERFORMANCE_HINT": runtime["performance_hint"].upper()}
    if runtime["streams"]:
        params["NUM_STREAMS"] = str(runtime["streams"])
    if runtime["threads"]:
        params["INFERENCE_NUM_THREADS"] = str(runtime["threads"])
    return params
