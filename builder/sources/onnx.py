"""ONNX sources: the file is checked and copied (with any external data) as the export; the
reference runs it unoptimized in ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

from builder.errors import MdbuildError, first_line
from builder.imports import import_sdk


def export(ctx, inputs: dict[str, Path], out: Path) -> None:
    import onnx

    path = ctx.paths["model"]
    try:
        model = onnx.load(str(path), load_external_data=True)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError...
        raise MdbuildError(f"not a valid ONNX model: {path} ({first_line(exc, 200)})", "model.path",
                           "point model.path at a .onnx file that onnx.checker accepts") from exc
    declared = [spec["name"] for spec in ctx.config["model"]["inputs"]]
    initializers = {init.name for init in model.graph.initializer}
    actual = [i.name for i in model.graph.input if i.name not in initializers]
    if sorted(declared) != sorted(actual):
        raise MdbuildError(f"the recipe declares inputs {declared} but the model has {actual}", "model.inputs",
                           "name the model's graph inputs in model.inputs")
    _check_types(model, ctx.config["model"], initializers)
    outputs, declared_outputs = [o.name for o in model.graph.output], list(ctx.config["model"]["outputs"])
    if outputs != declared_outputs:
        raise MdbuildError(f"the recipe declares outputs {declared_outputs} but the model has {outputs}",
                           "model.outputs", f"set model.outputs to {outputs}")
    if model.ByteSize() < 2**31 - 1 and not has_external_data(path):
        shutil.copyfile(path, out / "model.onnx")
    else:
        onnx.save(model, str(out / "model.onnx"), save_as_external_data=True, location="model.onnx.data")


def _check_types(model, config: dict, initializers: set[str]) -> None:
    """Each declared input has the graph's dtype, rank and fixed sizes (ONNX Runtime said only
    `INVALID_ARGUMENT : Got invalid dimensions for input: x`, several steps later)."""
    from onnx import helper

    graph_inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    for index, spec in enumerate(config["inputs"]):
        tensor = graph_inputs[spec["name"]].type.tensor_type
        dtype = str(helper.tensor_dtype_to_np_dtype(tensor.elem_type)) if tensor.elem_type else None
        if dtype and dtype != spec["dtype"]:
            raise MdbuildError(f"input '{spec['name']}' is {dtype} in the model, not {spec['dtype']}",
                               f"model.inputs[{index}].dtype", f"set it to {dtype}")
        if not tensor.HasField("shape"):
            continue
        sizes = [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in tensor.shape.dim]
        shown = [size if size is not None else "?" for size in sizes]
        if len(sizes) != len(spec["shape"]):
            raise MdbuildError(f"input '{spec['name']}' has shape {shown} in the model, not {spec['shape']}",
                               f"model.inputs[{index}].shape", f"give {len(sizes)} dimensions as the model has")
        for axis, (size, declared) in enumerate(zip(sizes, spec["shape"])):
            wanted = config["dims"].get(declared) if isinstance(declared, str) else declared
            if axis and isinstance(size, int) and size > 0 and wanted != size:
                raise MdbuildError(f"input '{spec['name']}' has size {size} at axis {axis} in the model, not {wanted} "
                                   f"(shape {shown})", f"model.inputs[{index}].shape", f"declare {size} there")


def has_external_data(path: Path) -> bool:
    """Whether the ONNX file keeps initializers in files of their own."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)


def runner(ctx):
    """The model file run unoptimized in ONNX Runtime, for the reference step."""
    onnxruntime = import_sdk("onnxruntime", "onnxruntime", "model.source")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(str(ctx.paths["model"]), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own Fail / NotImplemented types
        raise MdbuildError(f"ONNX Runtime cannot load the model: {first_line(exc, 200)}", "model.path",
                           "a custom or contrib operator needs its runtime; convert the model to standard ONNX operators") from exc
    names = list(ctx.config["model"]["outputs"])
    return lambda feeds: dict(zip(names, session.run(names, feeds)))
