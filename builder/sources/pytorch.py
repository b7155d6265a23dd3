"""PyTorch sources: a factory by import path (+ optional state_dict checkpoint) or a TorchScript file.

Export uses torch.onnx; the reference step runs the same module in eager mode on the verification
inputs. Both construct the model identically (same seed), so random-weight recipes agree.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

from builder.errors import MdbuildError, first_line
from builder.imports import build_from_factory, import_sdk
from builder.inputs import dynamic_axes, make_inputs
from builder.optimize.summary import write_summary
from builder.samples import describe_feed


def load_module(ctx) -> Any:
    """The source model in eval mode, built the same way for export and for reference."""
    torch = import_sdk("torch", "torch", "model.source")
    model_cfg = ctx.config["model"]
    torch.manual_seed(model_cfg["seed"])
    if model_cfg["source"] == "torchscript":
        path = ctx.paths["model"]
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # torch raises RuntimeError with a C++ trace for a bad file
            raise MdbuildError(f"not a TorchScript file: {path} ({first_line(exc)})", "model.path",
                               "point model.path at a file written by torch.jit.save") from exc
    module = build_from_factory(model_cfg, ctx.workdir, torch.nn.Module, "torch.nn.Module")
    if "weights" in ctx.paths:
        _load_weights(torch, module, ctx.paths["weights"])
    return module.eval()


def load_pruned(ctx, inputs: dict[str, Path]):
    """The source model, with the pruned weights when the plan prunes before export."""
    module = load_module(ctx)
    if "pruned" in inputs:
        torch = import_sdk("torch", "torch", "model.source")
        module.load_state_dict(torch.load(str(inputs["pruned"] / "weights.pt"), map_location="cpu", weights_only=True))
    return module


def _load_weights(torch, module, path: Path) -> None:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise MdbuildError(f"cannot load checkpoint {path} with weights_only=True ({first_line(exc)})",
                           "model.weights", "save a plain state_dict with torch.save(model.state_dict(), path)") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:400]
        raise MdbuildError(f"checkpoint {path} does not fit the model: {detail}", "model.weights",
                           "use the checkpoint written for this factory and model.kwargs") from exc


def example_inputs(ctx) -> tuple:
    torch = import_sdk("torch", "torch", "model.source")
    model_cfg = ctx.config["model"]
    arrays = make_inputs(model_cfg["inputs"], model_cfg["dims"], 1, model_cfg["seed"])
    return tuple(torch.from_numpy(arrays[spec["name"]][0]) for spec in model_cfg["inputs"])


def export(ctx, inputs: dict[str, Path], out: Path) -> None:
    torch = import_sdk("torch", "torch", "model.source")
    import onnx

    model_cfg = ctx.config["model"]
    module = load_pruned(ctx, inputs)
    args = example_inputs(ctx)
    names = [spec["name"] for spec in model_cfg["inputs"]]
    target = out / "model.onnx"
    _check_forward(torch, module, args, model_cfg)
    try:
        _export(torch, module, args, names, model_cfg, model_cfg["exporter"], target, ctx.progress)
        used = None
    except Exception as exc:
        if model_cfg["exporter"] != "torchscript":
            raise _export_error(exc, model_cfg) from exc
        # TorchScript cannot convert some operators (the TransformerEncoder fast path's fused attention);
        # torch.export-based dynamo often can: try it, and say so.
        first = _export_error(exc, model_cfg)
        ctx.progress(f"the torchscript exporter failed ({first.what}); trying the dynamo exporter")
        target.unlink(missing_ok=True)
        try:
            _export(torch, module, args, names, model_cfg, "dynamo", target, ctx.progress)
        except Exception as again:
            raise MdbuildError(f"{first.what}; the dynamo exporter failed too: {_export_error(again, model_cfg).what}",
                               "model.factory", "replace the operator in the model, or run with traceback=true for the "
                               "exporters' full errors") from again
        used = {"exporter": "dynamo", "fallback_from": "torchscript", "why": first.what,
                "hint": "set model.exporter=dynamo to export with dynamo directly"}
        ctx.progress(f"exported with dynamo: {used['hint']}")
    onnx.checker.check_model(str(target))
    if used:  # the report and the lock (this output's digest) say which exporter made the graph
        write_summary(out, "export", **used)


def _export(torch, module, args, names: list[str], model_cfg: dict[str, Any], exporter: str, target: Path, progress) -> None:
    progress(f"torch.onnx.export ({exporter}, opset {model_cfg['opset']})")
    # The exporter prints the whole TorchScript graph on failure (from C++, to file descriptor 2); the
    # error we raise says enough.
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()), _quiet_fd(2):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            axes = dynamic_axes(model_cfg["inputs"])
            dims = {dim: torch.export.Dim(dim) for spec in axes.values() for dim in spec.values()}
            shapes = tuple({axis: dims[dim] for axis, dim in axes.get(name, {}).items()} or None for name in names)
            program = torch.onnx.export(module, args, input_names=names, output_names=model_cfg["outputs"],
                                        dynamic_shapes=shapes if axes else None, opset_version=model_cfg["opset"],
                                        dynamo=True, verbose=False)
            program.save(str(target))
        else:
            torch.onnx.export(module, args, str(target), input_names=names, output_names=model_cfg["outputs"],
                              dynamic_axes=dynamic_axes(model_cfg["inputs"]) or None,
                              opset_version=model_cfg["opset"], dynamo=False)


@contextlib.contextmanager
def _quiet_fd(fd: int):
    """Discards what native code writes to a file descriptor meanwhile."""
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _check_forward(torch, module, args: tuple, model_cfg: dict[str, Any]) -> None:
    """The model takes inputs of the declared shapes and types before an exporter tries: a mismatch is the
    recipe's (model.inputs), not an operator the exporter cannot convert."""
    try:
        with torch.no_grad():
            module(*args)
    except Exception as exc:  # the user's model raised on the declared inputs
        given = ", ".join(describe_feed(spec["name"], arg.numpy()) for spec, arg in zip(model_cfg["inputs"], args))
        raise MdbuildError(f"the model rejects inputs as declared ({given}): {type(exc).__name__}: {first_line(exc)}",
                           "model.inputs", "declare the shapes, dtypes, order and low/high (token ids below the "
                           "vocabulary size) of the model's forward arguments") from exc


def _export_error(exc: Exception, model_cfg: dict[str, Any]) -> MdbuildError:
    text = str(exc)
    match = re.search(r"Unsupported FX nodes: (\{.*?\})", text)
    if match is None and "operator" in text.lower():
        match = re.search(r"\b([A-Za-z_][\w.]*::[\w.]*\w)", text)
    if match:
        return MdbuildError(
            f"the exporter cannot convert operator {match.group(1)} at opset {model_cfg['opset']}",
            "model.factory",
            "raise model.opset, try model.exporter=dynamo, or replace the operator in the model",
        )
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    return MdbuildError(f"torch.onnx.export failed: {first_line(root)}", "model.factory",
                        "run with traceback=true for the exporter's full error")


def runner(ctx):
    """The source model as a function of numpy feeds, for the reference step."""
    torch = import_sdk("torch", "torch", "model.source")
    module = load_module(ctx)
    names = [spec["name"] for spec in ctx.config["model"]["inputs"]]

    def run(feeds):
        with torch.no_grad():
            result = module(*(torch.from_numpy(feeds[name]) for name in names))
        if isinstance(result, torch.Tensor):
            result = (result,)
        elif isinstance(result, dict):
            result = tuple(result.values())
        return dict(zip(ctx.config["model"]["outputs"], (r.detach().numpy() for r in result)))

    return run
