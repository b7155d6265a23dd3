"""Accuracy-controlled int8 for OpenVINO (nncf_quantize with quantization.accuracy_control): plain NNCF
int8 first (as without accuracy control); where it misses the int8 limits (verify.tolerances.int8) on
the calibration set, NNCF's quantize_with_accuracy_control returns the quantizers that cost most to
float until they hold. A model whose limits hold only with nothing quantized fails.

Its metric is the margin inside the limits (backends.accuracy_control.margin: 1 for the float model,
0 at a limit), so its drop budget is that 1. SmoothQuant stays off under accuracy control: NNCF
restores a reverted layer's weights from the float model while SmoothQuant's rescaling of its input
stays in the graph, and all-MiniLM-L6-v2 fell to a minimum cosine of 0.007 as layers were "restored"."""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np

from backends.accuracy_control import margin
from builder.errors import GateFailed


def quantize_within_limits(model, samples: list[dict], options: dict[str, Any], limits: dict[str, Any],
                           progress: Callable[[str], None]):
    """(the int8 model, the facts for the step's summary)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    def answers(candidate) -> list[dict]:
        compiled = candidate if isinstance(candidate, ov.CompiledModel) else \
            ov.Core().compile_model(candidate, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # as int8 artifacts run
        return [_named(compiled(sample)) for sample in samples]

    reference = answers(model)
    plain = nncf.quantize(model, nncf.Dataset(samples), **options)
    first = margin(reference, answers(plain), limits)
    progress(f"accuracy control: plain int8 is {'inside' if first >= 0 else 'past'} the int8 limits (margin {first:.3g})")
    if first >= 0:
        return plain, {"accuracy_control": True, "rounds": 1, "returned_to_float": 0}

    calls = 0

    def validate(compiled, items) -> tuple[float, list[float]]:
        nonlocal calls
        calls += 1
        items = list(items)
        actual = [_named(compiled(samples[index])) for index in items]
        expected = [reference[index] for index in items]
        if calls % 10 == 0:
            progress(f"accuracy control: {calls} validations")
        return margin(expected, actual, limits), [margin([e], [a], limits) for e, a in zip(expected, actual)]

    advanced = copy.deepcopy(options.pop("advanced_parameters")) or AdvancedQuantizationParameters()
    advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(matmul=-1, convolution=-1)
    indices = nncf.Dataset(list(range(len(samples))), lambda index: samples[index])
    controlled = nncf.quantize_with_accuracy_control(model, indices, indices, validate, max_drop=1.0,
                                                      drop_type=nncf.DropType.ABSOLUTE,
                                                      advanced_quantization_parameters=advanced, **options)
    final = margin(reference, answers(controlled), limits)
    still = _quantized_ops(controlled)
    returned = [name for name in _quantized_ops(plain) if name not in still]
    if final < 0:
        raise GateFailed(f"NNCF's accuracy control returned {len(returned)} operations to float and the int8 limits "
                         f"still fail on the calibration set (margin {final:.3g})", "quantization.accuracy_control",
                         "build an fp16 or fp32 target, or keep more in float with quantization.exclude")
    if not still:
        raise GateFailed(f"the int8 limits hold only with every quantized operation back in float ({len(returned)}): "
                         "this is no longer an int8 model", "quantization.accuracy_control",
                         "build an fp16 or fp32 target, or loosen verify.tolerances.int8")
    return controlled, {"accuracy_control": True, "validations": calls, "returned_to_float": len(returned),
                        "returned_first": ", ".join(returned[:5])}


def _named(results) -> dict[str, np.ndarray]:
    return {port.get_any_name(): np.asarray(value) for port, value in results.items()}


def _quantized_ops(model) -> list[str]:
    """The operations reading a FakeQuantize output (quantized inputs), in graph order."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() != "FakeQuantize"
            and any(port.get_source_output().get_node().get_type_name() == "FakeQuantize" for port in op.inputs())]
