"""A Triton Inference Server model repository for the artifact: config.pbtxt beside the version
folder that holds the model, for backends that name Triton's (`Backend.triton`)."""

from __future__ import annotations

from typing import Any

_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
          "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}


def config_pbtxt(name: str, triton, inputs: dict[str, tuple[str, list]], outputs: dict[str, tuple[str, list]],
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
            # Triton wants dims: a scalar per batch row is [ 1 ] reshaped to [ ].
            dims_text = f"dims: [ {shape} ]" if shown else "dims: [ 1 ] reshape: { shape: [ ] }"
            lines.append(f'  {{ name: "{tensor}" data_type: {_TYPES[dtype]} {dims_text} }}{comma}')
        return lines + ["]"]

    lines = [f'name: "{name}"', f'backend: "{triton.backend}"']
    if triton.platform:
        lines += [f'platform: "{triton.platform}"']
    if triton.model_file:
        lines += [f'default_model_filename: "{triton.model_file}"']
    lines += [f"max_batch_size: {max_batch}"]
    lines += tensors("input", inputs) + tensors("output", outputs)
    lines += [f"instance_group [ {{ kind: {triton.kind} count: 1 }} ]"]
    if batched and serving["max_batch_size"] > 1:
        delay_us = int(serving["max_queue_delay_ms"] * 1000)
        lines += [f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}"]
    for key, value in (triton.parameters(runtime) if triton.parameters else {}).items():
        lines += [f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}']
    if triton.accelerator:
        accelerator, parameters = triton.accelerator
        lines += ["optimization { execution_accelerators { gpu_execution_accelerator: [ {", f'  name: "{accelerator}"']
        lines += [f'  parameters {{ key: "{key}" value: "{value}" }}' for key, value in parameters.items()]
        lines += ["} ] } }"]
    return "\n".join(lines) + "\n"
