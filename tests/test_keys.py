"""Keys are exact by construction: every step's node holds the keys its step declares it reads and
nothing else. Walks every leaf of the resolved config of the shipped recipes and targets, changes it,
re-plans, and checks step by step that the node changed exactly when the step reads that key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from builder import cli
from builder.errors import MdbuildError
from builder.plan import make_plan
from builder.recipes import recipe_files
from builder.resources import resource_dir
from builder.schema import backend_options
from builder.spec import BuildSpec

RUN_ONLY = ("mode", "traceback", "cache", "output", "lock")
# Values the plan validates: changed to another valid one, not to a made-up string.
CHOICES = {
    "ort_quantize.mode": "dynamic", "ort_quantize.activation_type": "int8", "ort_quantize.weight_type": "uint8",
    "ort_quantize.calibration_method": "entropy", "nncf_quantize.preset": "mixed", "nncf_quantize.range_estimator": "default",
    "target.options.graph_optimization": "basic", "target.options.performance_hint": "throughput",
    "preprocess.color": "BGR", "preprocess.layout": "NHWC", "serving.scores": "raw", "model.exporter": "dynamo",
    "target.options.flavor": "rtx", "trt_quantize.calibration_method": "entropy",
}
# Keys whose change re-shapes the plan (another source, backend, step list or file) rather than a value.
STRUCTURAL = ("model.source", "model.factory", "target.backend", "target.name", "target.precision", "optimize",
              "target.optimize", "model.path", "model.weights", "calibration.path", "evaluation.path",
              "calibration.factory", "evaluation.factory", "evaluation.metric", "serving.labels", "model.inputs.0.name",
              "model.inputs.0.dtype", "model.outputs", "calibration.source", "evaluation.source")
CASES = [("digits", target) for target in ("onnxruntime_fp32", "onnxruntime_int8", "openvino_fp16", "openvino_bf16",
                                           "openvino_int8", "pytorch", "tensorflow", "tensorrt_fp16",
                                           "tensorrt_int8")] + [("tiny", "tensorrt_fp16"), 
    ("resnet50", "onnxruntime_fp32"), ("resnet50_keras", "openvino_int8"), ("tiny", "openvino_fp32"),
    ("lenet_mindspore", "onnxruntime_fp32"), ("mobilenet_v2", "onnxruntime_int8")]


def _compose(recipe: str, target: str) -> BuildSpec:
    workdir = Path.cwd()
    cli._register_configs(workdir, [f"+recipe={recipe}"])
    with initialize_config_dir(version_base="1.3", config_dir=str(resource_dir("conf"))):
        config = OmegaConf.to_container(compose("config", overrides=[f"+recipe={recipe}", f"target={target}"]),
                                        resolve=True)
    backend_options(config["target"])
    path, packaged = recipe_files(workdir)[recipe]
    return BuildSpec(recipe=recipe, recipe_path=path, packaged_recipe=packaged, config=config, workdir=workdir)


def covers(paths, key):
    """Whether the dotted `key` is one of `paths` or lies under one of them."""
    return any(key == path or key.startswith(path + ".") for path in paths)


def _leaves(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list) and value and all(isinstance(item, (dict, list)) for item in value):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{prefix}.{index}")
    else:
        yield prefix, value


def _changed(value, key):
    if key in CHOICES:
        return CHOICES[key]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 + 0.01
    if isinstance(value, list) and all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value):
        return [item + 1 for item in value] or [1.0]
    return None  # free-form (None, strings, dicts): not changed blindly


def _set(config, key, value):
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = value


def _own(node):
    """What a node contributes to its key besides its upstream outputs' digests."""
    return node.run, node.version, node.config, node.files, node.libraries, node.extra_versions, node.host_dependent


@pytest.mark.parametrize("recipe,target", CASES)
def test_a_step_key_changes_exactly_with_the_keys_the_step_reads(recipe, target):
    spec = _compose(recipe, target)
    base = {node.id: node for node in make_plan(spec).steps}
    checked = 0
    for key, value in _leaves(spec.config):
        if key.split(".")[0] in RUN_ONLY or covers(STRUCTURAL, key):
            continue
        new = _changed(value, key)
        if new is None:
            continue
        config = copy.deepcopy(spec.config)
        _set(config, key, new)
        try:
            plan = make_plan(BuildSpec(spec.recipe, spec.recipe_path, spec.packaged_recipe, config, spec.workdir))
        except MdbuildError as error:  # a value the plan refuses (checked at plan time, before any step)
            assert error.where.startswith(key.rsplit(".", 1)[0].split(".")[0]), (key, error.one_line())
            continue
        for node in plan.steps:
            if node.id not in base:
                continue
            reads = covers(base[node.id].reads, key)
            assert (_own(node) != _own(base[node.id])) == reads, f"{recipe}/{target}: step {node.id}, key {key}"
            checked += 1
    assert checked > 100


def test_the_fp32_limits_do_not_touch_int8_verification():
    spec = _compose("digits", "openvino_int8")
    before = {node.id: node for node in make_plan(spec).steps}
    config = copy.deepcopy(spec.config)
    config["verify"]["tolerances"]["fp32"]["max_rel_l2"] *= 2
    after = {node.id: node for node in make_plan(BuildSpec(spec.recipe, spec.recipe_path, spec.packaged_recipe,
                                                           config, spec.workdir)).steps}
    assert after["verify"].config == before["verify"].config
    assert sorted(before["verify"].config["verify"]["tolerances"]) == ["int8"]
