"""ONNX -> PyTorch: onnx2torch rebuilds the graph as a torch.fx module, which torch.export turns into
an ExportedProgram (model.pt2) with a dynamic batch dimension where the ONNX graph has one.

An ExportedProgram rather than TorchScript: torch 2.14 deprecates torch.jit.load. The example batch
is 2, because torch.export specializes sizes 0 and 1 to constants (measured: exporting onnx2torch's
SqueezeNet with a batch-1 example fails with "Constraints violated (batch)")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.onnx_graph import converter_record, example_inputs, fold_weight_identities, signature
from builder.errors import MdbuildError, first_line

MODEL_FILE = "model.pt2"
_FALLBACK_OPSET = 17  # the newest opset whose operators onnx2torch 1.5 implements


def compile_model(onnx_path: Path, target: dict[str, Any], hardware: dict[str, Any], out: Path) -> dict[str, Any]:
    import onnx
    import torch

    model = onnx.load(str(onnx_path))
    folded = fold_weight_identities(model)
    tensors = signature(model)
    module, opset = _convert(model)
    dynamic = all(dims and dims[0] is None for _, _, dims in tensors["inputs"])
    example = tuple(torch.from_numpy(array) for array in example_inputs(tensors["inputs"], 2 if dynamic else 1))
    shapes = tuple({0: torch.export.Dim.DYNAMIC} if dynamic else None for _ in example)
    try:
        program = torch.export.export(module, example, dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds
        raise MdbuildError(f"torch.export cannot export the converted module: {first_line(exc)}", "target.backend",
                           "build an ONNX Runtime or OpenVINO target") from exc
    torch.export.save(program, str(out / MODEL_FILE))
    return {
        "model_file": MODEL_FILE,
        "inputs": tensors["inputs"],
        "outputs": tensors["outputs"],
        "intra_op_threads": hardware["intra_op_threads"],
        "converter": converter_record("onnx2torch", format="torch.export ExportedProgram",
                                      folded_weight_identities=folded, opset=opset),
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
                        "build an ONNX Runtime or OpenVINO target, or change the model.opset")
