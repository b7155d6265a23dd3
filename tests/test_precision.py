"""What each OpenVINO target computes in on this CPU, and the limits that follow: checked against the
CPU's own features, so the same assertions hold on a CPU with bf16 or f16 arithmetic and on one
without. Also: a lock checks on another host, and the digits example builds the same model on any CPU."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import QUICK, cnn_recipe, read_json

pytestmark = pytest.mark.torch
OPENVINO_TARGETS = ["openvino_fp32", "openvino_fp16", "openvino_bf16"]


def _capabilities() -> list[str]:
    """The float arithmetic OpenVINO's CPU plugin has on this CPU (FP16: AVX512-FP16 or AVX2-VNNI-2;
    BF16: AVX512-BF16, AMX or AVX2-VNNI-2)."""
    import openvino

    return list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


@pytest.fixture(scope="module")
def openvino_builds(tmp_path_factory):
    from conftest import Workspace

    root = tmp_path_factory.mktemp("precision")
    workspace = Workspace(root / "work", root / "cache")
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("-m", "+recipe=cnn", *QUICK, "target=" + ",".join(OPENVINO_TARGETS))
    artifacts = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("artifact: ")]
    by_target = {read_json(workspace.root / a / "manifest.json")["target"]: workspace.root / a for a in artifacts}
    return workspace, result, by_target


# target -> (the OpenVINO capability it computes in where the CPU has it, that arithmetic, its tolerance level,
# the level where the CPU lacks it and it computes in float32, the hint Triton gets)
EXPECTED = {
    "openvino_fp32": ("FP32", "fp32", "fp32", "fp32", "f32"),
    "openvino_fp16": ("FP16", "fp16", "fp16", "fp16", "f32"),  # fp16 weights: fp16 limits either way
    "openvino_bf16": ("BF16", "bf16", "bf16", "fp32", "bf16"),  # fp32 weights: in float32, fp32 limits
}
WORDS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@pytest.mark.parametrize("target", OPENVINO_TARGETS)
def test_each_openvino_target_computes_what_it_promises_on_this_cpu(openvino_builds, target):
    _, result, artifacts = openvino_builds
    capability, arithmetic, level, fallback_level, triton_hint = EXPECTED[target]
    has_it = capability in _capabilities()
    report = read_json(artifacts[target] / "report.json")
    compute = report["compute"]
    assert compute["precision"] == (arithmetic if has_it else "fp32"), compute
    assert report["tolerance_level"] == (level if has_it else fallback_level)
    assert report["tolerance"] == read_json(artifacts[target] / "manifest.json")["config"]["verify"]["tolerances"][
        report["tolerance_level"]]
    if has_it and arithmetic != "fp32":
        assert compute["ops"][arithmetic] > compute["ops"].get("fp32", 0), compute  # most operations, not a few
    if not has_it:
        assert compute["words"] == f"float32, as this CPU has no {WORDS[arithmetic]} arithmetic"
    assert f"computed in {compute['words']}" in result.stdout  # the build log says it in words
    assert f"(computed in {compute['words']})" in (artifacts[target] / "report.md").read_text()
    triton = (artifacts[target] / "model_repository" / "cnn" / "config.pbtxt").read_text()
    assert f'key: "INFERENCE_PRECISION_HINT" value: {{ string_value: "{triton_hint}" }}' in triton


def test_an_f16_hint_never_computes_in_bf16(tmp_path):
    """The plugin's own fallback, on this CPU, for the hint the fp16 target used to give: float16 where
    the CPU has it, float32 where it has neither, and bfloat16 where it has only that, which the
    runtime refuses. A graph whose output is converted to float16 is not float16 arithmetic."""
    import openvino
    from openvino import opset13 as ops

    from backends.openvino.runtime import UnsupportedPrecision, _computed

    core = openvino.Core()
    x = ops.parameter([1, 8], openvino.Type.f32, name="x")
    model = openvino.Model([ops.convert(ops.relu(ops.matmul(x, ops.constant(np.ones((8, 8), np.float32)), False, False)), "f16")], [x])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f16"})
    capabilities = _capabilities()
    if "FP16" in capabilities or "BF16" not in capabilities:
        assert _computed(compiled, ["fp16", "fp32"], "fp16")["precision"] == ("fp16" if "FP16" in capabilities else "fp32")
    else:
        with pytest.raises(UnsupportedPrecision, match="OpenVINO settled on bfloat16 arithmetic, which this artifact "
                                                       "does not allow \\(only float16, float32\\)"):
            _computed(compiled, ["fp16", "fp32"], "fp16")
    plain = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    computed = _computed(plain, ["fp32"], "fp32")
    assert computed["precision"] == "fp32" and list(computed["ops"]) == ["fp32"] and computed["words"] == "float32"


def test_the_manifest_holds_the_limits_of_every_precision_the_target_may_compute_in(openvino_builds):
    """For serve.py --selftest on a CPU that computes otherwise than the build host did."""
    _, _, artifacts = openvino_builds
    limits = read_json(artifacts["openvino_bf16"] / "manifest.json")["verification"]["limits_by_compute"]
    assert limits["bf16"]["level"] == "bf16" and limits["fp32"]["level"] == "fp32"
    assert limits["bf16"]["max_rel_l2"] > limits["fp32"]["max_rel_l2"]


def _selftest(artifact):
    return subprocess.run([sys.executable, "-I", str(artifact / "serve.py"), "--selftest"], cwd=artifact,
                          capture_output=True, text=True, timeout=120)


def test_selftest_on_another_cpu_kind_holds_the_source_model_at_the_limits_of_what_it_computes(openvino_builds):
    """As if the build host had been the other CPU kind: where the manifest's host or arithmetic is not
    this one's, the selftest compares with the source model at the limits of the precision computed
    here (the build's own outputs are bit-exact only on the same kind), and fails when they break."""
    _, _, artifacts = openvino_builds
    artifact = artifacts["openvino_bf16"]
    manifest_path = artifact / "manifest.json"
    original = read_json(manifest_path)
    here = original["verification"]["compute"]["precision"]
    level = original["verification"]["limits_by_compute"][here]["level"]
    same = _selftest(artifact)
    assert same.returncode == 0 and "logits: rel_l2" in same.stdout and "against the build's outputs" in same.stdout

    other_cpu = json.loads(json.dumps(original))
    other_cpu["host"]["cpu_flags"] = sorted(set(other_cpu["host"]["cpu_flags"]) ^ {"avx512_bf16"})
    manifest_path.write_text(json.dumps(other_cpu))
    moved = _selftest(artifact)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "selftest: this host (" in moved.stdout and "is not the build host" in moved.stdout
    assert f"selftest logits: against the source model at the {level} limits: rel_l2" in moved.stdout

    other = next(p for p in ("bf16", "fp32") if p != here)
    other_arithmetic = json.loads(json.dumps(original))
    other_arithmetic["verification"]["compute"] = {"precision": other, "words": WORDS[other]}
    manifest_path.write_text(json.dumps(other_arithmetic))
    moved = _selftest(artifact)
    words = original["verification"]["compute"]["words"]
    assert f"selftest: this host computes in {words}; the build verified {WORDS[other]}" in moved.stdout
    assert moved.returncode == 0 and f"at the {level} limits" in moved.stdout

    other_arithmetic["verification"]["limits_by_compute"][here]["max_rel_l2"] = 1e-12
    manifest_path.write_text(json.dumps(other_arithmetic))
    broken = _selftest(artifact)
    assert broken.returncode == 1 and "rel_l2" in broken.stdout and "MISMATCH" in broken.stdout
    manifest_path.write_text(json.dumps(original))


def test_a_precision_the_backend_does_not_build_fails_at_planning(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", "target=onnxruntime_fp32", "target.precision=bf16", "mode=plan", check=False)
    assert result.code == 1
    assert "error: target.precision: onnxruntime does not build precision 'bf16' (fix: choose one of: fp32, int8)" in result.stderr
    missing = workspace.run("+recipe=cnn", "target=openvino_bf16", "~verify.tolerances.bf16", "mode=plan", check=False)
    assert "error: verify.tolerances.bf16: no tolerances for level 'bf16'" in missing.stderr


def _rehost(lock_path, target: str) -> None:
    """Rewrites a lock as the other CPU kind would have written it (bf16 arithmetic or not)."""
    from builder.keys import step_key

    data = read_json(lock_path)
    keys = {}
    for step in data["targets"][target]["steps"]:
        if "host" in step["description"]:
            step["description"]["host"]["cpu_flags"] = sorted(set(step["description"]["host"]["cpu_flags"]) ^ {"avx512_bf16"})
        if "steps" in step["description"]:  # the package embeds the keys of the steps before it
            step["description"]["steps"] = dict(keys)
        step["key"] = keys[step["id"]] = step_key(step["description"])
    lock_path.write_text(json.dumps(data))


def test_a_lock_from_another_cpu_kind_checks_here_and_still_catches_changes(workspace):
    recipe = workspace.recipe("cnn", cnn_recipe())
    workspace.run("+recipe=cnn", *QUICK)
    lock = recipe.with_name("cnn.lock.json")
    _rehost(lock, "onnxruntime_fp32")
    check = workspace.run("+recipe=cnn", *QUICK, "mode=check")
    assert "note: verify, package were locked on a host that differs from this one in cpu_flags, and were checked" in check.stdout
    assert "lock check passed: 5 steps" in check.stdout
    changed = workspace.run("+recipe=cnn", *QUICK, "mode=check", "verify.latency.min_runs=21", check=False)
    assert "lock check failed at step 'verify': config changed: verify.latency.min_runs" in changed.stderr


# PyTorch's own AVX2 kernels and oneDNN limited to AVX2: the float arithmetic of a CPU without AVX-512.
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_digits_exports_the_same_model_with_other_cpu_kernels(tmp_path):
    """The shipped weights make the export identical whatever kernels the CPU runs (training with
    PyTorch's AVX2 kernels gives other weights than with its AVX-512 ones; on an AVX2-only CPU both runs
    use the same kernels and this checks only that a second clone checks and exports alike)."""
    from conftest import Workspace

    here = Workspace(tmp_path / "here", tmp_path / "cache-here")
    built = here.run("+recipe=digits", *QUICK)
    lock = read_json(here.root / "recipes" / "digits.lock.json")["targets"]["onnxruntime_fp32"]
    export = next(step for step in lock["steps"] if step["id"] == "export")
    assert export["description"]["inputs"]["weights"], "the export reads the shipped weights"
    there = Workspace(tmp_path / "there", tmp_path / "cache-there")
    (there.root / "recipes" / "digits.lock.json").write_text((here.root / "recipes" / "digits.lock.json").read_text())
    check = there.run("+recipe=digits", *QUICK, "mode=check", env=AVX2_ONLY)
    assert "lock check passed: 5 steps" in check.stdout
    rebuilt = there.run("+recipe=digits", *QUICK, "lock.update=false", env=AVX2_ONLY)
    assert read_json(rebuilt.artifact / "manifest.json")["steps"]["export"]["digest"] == export["output_digest"]
    assert read_json(built.artifact / "report.json")["evaluation"]["source_score"] > 95


def test_a_packaged_file_that_does_not_exist_names_the_key(workspace):
    result = workspace.run("+recipe=digits", "model.weights=pkg://no_such_package/w.pt", "mode=plan", check=False)
    assert result.code == 1
    assert "error: model.weights: 'no_such_package' in pkg://no_such_package/w.pt is not an installed package" in result.stderr
    missing = workspace.run("+recipe=digits", "model.weights=pkg://builder.examples/nothing.pt", "mode=plan", check=False)
    assert "error: model.weights: file not found: " in missing.stderr and "/builder/examples/nothing.pt" in missing.stderr
