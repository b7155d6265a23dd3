"""MindSpore sources: a network (nn.Cell) from a factory by import path, plus an optional checkpoint
(.ckpt), exported with MindSpore's own ONNX exporter (mindspore.onnx.export). The reference step
runs the same network in MindSpore on the verification inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.errors import MdbuildError, first_line
from builder.imports import build_from_factory, import_sdk
from builder.inputs import dynamic_axes, make_inputs


def load_network(ctx) -> Any:
    ms = import_sdk("mindspore", "mindspore", "model.source")
    model_cfg = ctx.config["model"]
    ms.set_seed(model_cfg["seed"])
    network = build_from_factory(model_cfg, ctx.workdir, ms.nn.Cell, "mindspore.nn.Cell")
    if "weights" in ctx.paths:
        _load_checkpoint(ms, network, ctx.paths["weights"])
    network.set_train(False)
    return network


def _load_checkpoint(ms, network, path: Path) -> None:
    try:
        parameters = ms.load_checkpoint(str(path))
    except Exception as exc:  # noqa: BLE001 - MindSpore raises ValueError/RuntimeError for bad files
        raise MdbuildError(f"cannot read MindSpore checkpoint {path} ({first_line(exc)})", "model.weights",
                           "give a .ckpt written by mindspore.save_checkpoint") from exc
    expected = {parameter.name: tuple(parameter.shape) for parameter in network.get_parameters()}
    missing = sorted(set(expected) - set(parameters))
    unexpected = sorted(set(parameters) - set(expected))
    reshaped = [f"{name} {tuple(parameters[name].shape)} != {shape}" for name, shape in sorted(expected.items())
                if name in parameters and tuple(parameters[name].shape) != shape]
    problems = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
                f"shapes differ: {', '.join(reshaped[:3])}" if reshaped else ""]
    detail = "; ".join(problem for problem in problems if problem)
    if detail:
        raise MdbuildError(f"checkpoint {path} does not fit the network: {detail}", "model.weights",
                           "use the checkpoint saved from this factory and model.kwargs")
    ms.load_param_into_net(network, parameters, strict_load=True)


def export(ctx, inputs: dict[str, Path], out: Path) -> None:
    ms = import_sdk("mindspore", "mindspore", "model.source")
    import onnx

    model_cfg = ctx.config["model"]
    network = load_network(ctx)
    arrays = make_inputs(model_cfg["inputs"], model_cfg["dims"], 1, model_cfg["seed"])
    tensors = [ms.Tensor(arrays[spec["name"]][0]) for spec in model_cfg["inputs"]]
    axes = dynamic_axes(model_cfg["inputs"])
    target = out / "model.onnx"
    ctx.progress("mindspore.onnx.export")
    try:
        ms.onnx.export(network, *tensors, file_name=str(target), input_names=[s["name"] for s in model_cfg["inputs"]],
                       output_names=list(model_cfg["outputs"]), dynamic_axes=axes or None)
    except Exception as exc:  # noqa: BLE001 - the exporter raises RuntimeError with C++ context
        raise MdbuildError(f"mindspore.onnx.export failed: {first_line(exc)}", "model.factory",
                           "run with traceback=true for the exporter's full error") from exc
    model = onnx.load(str(target))
    _batch_outputs(model, axes, model_cfg["dims"])
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def _batch_outputs(model, axes: dict[str, dict[int, str]], sizes: dict[str, int]) -> None:
    """MindSpore's exporter makes the inputs' batch dynamic but writes the outputs' batch as the
    example's size; when every input is batched, so are the outputs that lead with that size."""
    batch = {spec.get(0) for spec in axes.values()}
    if len(batch) != 1 or None in batch or len(axes) != len(model.graph.input):
        return
    name = batch.pop()
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == sizes[name]:
            dims[0].dim_param = name


def runner(ctx):
    """The source network as a function of numpy feeds, for the reference step."""
    ms = import_sdk("mindspore", "mindspore", "model.source")
    network = load_network(ctx)
    names = [spec["name"] for spec in ctx.config["model"]["inputs"]]

    def run(feeds):
        result = network(*(ms.Tensor(feeds[name]) for name in names))
        if not isinstance(result, (tuple, list)):
            result = (result,)
        return dict(zip(ctx.config["model"]["outputs"], (r.asnumpy() for r in result)))

    return run
