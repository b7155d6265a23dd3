"""ONNX -> PyTorch: onnx2torch rebuilds the graph as a torch.fx module, saved as a `torch.export`
ExportedProgram (model.pt2, dynamic batch where the ONNX graph has one), else traced to TorchScript
(model.pt). Why, and the batch sizes it checks: README, "Framework conversions"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from backends.onnx_graph import converter_record, example_inputs, fold_weight_identities, signature
from builder.errors import MdbuildError, first_line

_FALLBACK_OPSET = 17  # the newest opset whose operators onnx2torch 1.5 implements


def check(config: dict[str, Any]) -> None:
    """Plan time: an ExportedProgram here keeps only the batch dimension dynamic."""
    for index, spec in enumerate(config["model"]["inputs"]):
        named = [dim for dim in spec["shape"][1:] if isinstance(dim, str)]
        if named:
            raise MdbuildError(f"input '{spec['name']}' has a dynamic dimension besides the batch ({named[0]})",
                               f"model.inputs[{index}].shape", "target=pytorch keeps only the first dimension dynamic: "
                               "give the others fixed sizes, or build an ONNX Runtime or OpenVINO target")


def compile_model(onnx_path: Path, config: dict[str, Any], out: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(onnx_path))
    folded = fold_weight_identities(model)
    tensors = signature(model)
    for name, _, dims in tensors["inputs"]:
        if None in dims[1:]:
            raise MdbuildError(f"input '{name}' has a dynamic dimension besides the batch ({dims})", "model.inputs",
                               "target=pytorch keeps only the first dimension dynamic: give the others fixed sizes")
    module, opset = _convert(model)
    try:
        model_file, how = _save_exported_program(module, tensors, out), "torch.export ExportedProgram"
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds; TorchScript is the fallback
        (out / "model.pt2").unlink(missing_ok=True)
        reason = first_line(exc, 160)
        try:
            model_file, how = _save_torchscript(module, tensors, out), f"TorchScript (torch.export: {reason})"
        except Exception as again:  # noqa: BLE001 - tracing raises many kinds
            raise MdbuildError(f"neither torch.export ({reason}) nor torch.jit.trace ({first_line(again, 160)}) "
                               "can save the converted module", "target.backend",
                               "build an ONNX Runtime or OpenVINO target") from again
    return {
        "model_file": model_file,
        "inputs": tensors["inputs"],
        "outputs": tensors["outputs"],
        "intra_op_threads": config["hardware"]["intra_op_threads"],
        "converter": converter_record("onnx2torch", format=how, folded_weight_identities=folded, opset=opset),
    }


def _convert(model) -> tuple:
    """onnx2torch's module and the opset it converted. onnx2torch lags behind ONNX (ReduceMean-18,
    with axes as an input, is not implemented), so a graph it rejects is converted down to
    _FALLBACK_OPSET with ONNX's version converter and tried once more."""
    from onnx import version_converter
    from onnx2torch import convert

    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    try:
        return convert(model).eval(), opset
    except NotImplementedError as exc:
        if opset <= _FALLBACK_OPSET:
            raise _unconvertible(exc) from exc
        try:
            return convert(version_converter.convert_version(model, _FALLBACK_OPSET)).eval(), _FALLBACK_OPSET
        except Exception as again:  # noqa: BLE001 - the version converter and onnx2torch raise many kinds
            raise _unconvertible(again) from again
    except Exception as exc:  # noqa: BLE001 - onnx2torch raises bare KeyError and friends
        raise _unconvertible(exc) from exc


def _unconvertible(exc: BaseException) -> MdbuildError:
    return MdbuildError(f"onnx2torch cannot convert this model: {first_line(exc)}", "target.backend",
                        "build an ONNX Runtime or OpenVINO target (onnx2torch implements a subset of ONNX's operators)")


def _batched(tensors: dict[str, list]) -> bool:
    return all(dims and dims[0] is None for _, _, dims in tensors["inputs"])


def _save_exported_program(module, tensors: dict[str, list], out: Path) -> str:
    import torch

    dynamic = _batched(tensors)
    example = tuple(torch.from_numpy(array) for array in example_inputs(tensors["inputs"], 2 if dynamic else 1))
    shapes = tuple({0: torch.export.Dim.DYNAMIC} if dynamic else None for _ in example)
    program = torch.export.export(module, example, dynamic_shapes=shapes, strict=False)
    torch.export.save(program, str(out / "model.pt2"))
    return "model.pt2"


def _save_torchscript(module, tensors: dict[str, list], out: Path) -> str:
    import torch

    example = tuple(torch.from_numpy(array) for array in example_inputs(tensors["inputs"], 1))
    with torch.inference_mode():
        traced = torch.jit.trace(module, example, check_trace=False)
    if _batched(tensors) and not _trace_holds(module, traced, tensors["inputs"]):
        for _, _, dims in tensors["inputs"] + tensors["outputs"]:
            if dims and dims[0] is None:
                dims[0] = 1
    traced.save(str(out / "model.pt"))
    return "model.pt"


def _trace_holds(module, traced, inputs: list) -> bool:
    """Whether the trace (taken at batch 1) still matches the module at batch 3."""
    import torch

    example = [torch.from_numpy(array) for array in example_inputs(inputs, 3)]
    try:
        with torch.inference_mode():
            expected, actual = module(*example), traced(*example)
    except Exception:  # noqa: BLE001 - a trace specialized to batch 1 fails in many ways
        return False
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    actual = actual if isinstance(actual, (tuple, list)) else (actual,)
    return all(e.shape == a.shape and np.allclose(e.numpy(), a.numpy(), rtol=1e-4, atol=1e-5)
               for e, a in zip(expected, actual))
