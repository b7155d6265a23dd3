"""What each OpenVINO target computes in on this CPU, and the limits that follow: checked against the
CPU's own features, so the same assertions hold on a CPU with bf16 or f16 arithmetic and on one
without. Also: a lock checks on another host, and the digits example builds the same model on any CPU."""

import json
import subprocess
import sys

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


# target -> (OpenVINO capability it computes in where the CPU has it, that precision, its tolerance level,
# and the level where the CPU lacks it and the target computes in float32)
EXPECTED = {
    "openvino_fp32": (None, "f32", "fp32", "fp32"),
    "openvino_fp16": ("FP16", "f16", "fp16", "fp16"),  # fp16 weights: fp16 limits either way
    "openvino_bf16": ("BF16", "bf16", "bf16", "fp32"),  # fp32 weights: computed in float32, fp32 limits
}
WORDS = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


@pytest.mark.parametrize("target", OPENVINO_TARGETS)
def test_each_openvino_target_computes_what_it_promises_on_this_cpu(openvino_builds, target):
    _, result, artifacts = openvino_builds
    capability, lower, level, fallback_level = EXPECTED[target]
    has_it = capability in _capabilities()
    report = read_json(artifacts[target] / "report.json")
    compute = report["compute"]
    assert compute["precision"] == (lower if has_it else "f32"), compute
    assert "bf16" not in compute["ops"] or target == "openvino_bf16", "bf16 only when the target asks for it"
    assert report["tolerance_level"] == (level if has_it else fallback_level)
    assert report["tolerance"] == read_json(artifacts[target] / "manifest.json")["config"]["verify"]["tolerances"][
        report["tolerance_level"]]
    assert compute["words"].startswith(WORDS[compute["precision"]])
    if capability and not has_it:
        assert compute["words"].endswith(f"as this CPU has no {WORDS[lower]} arithmetic")
    assert f"computed in {compute['words']}" in result.stdout  # the build log says it in words
    assert f"(computed in {compute['words']})" in (artifacts[target] / "report.md").read_text()
    triton = (artifacts[target] / "model_repository" / "cnn" / "config.pbtxt").read_text()
    assert f'key: "INFERENCE_PRECISION_HINT" value: {{ string_value: "{compute["hint"]}" }}' in triton


def test_the_manifest_holds_the_limits_of_every_precision_the_target_may_compute_in(openvino_builds):
    """For serve.py --selftest on a CPU that computes otherwise than the build host did."""
    _, _, artifacts = openvino_builds
    limits = read_json(artifacts["openvino_bf16"] / "manifest.json")["verification"]["limits_by_compute"]
    assert limits["bf16"]["level"] == "bf16" and limits["f32"]["level"] == "fp32"
    assert limits["bf16"]["max_rel_l2"] > limits["f32"]["max_rel_l2"]


def _selftest(artifact):
    return subprocess.run([sys.executable, "-I", str(artifact / "serve.py"), "--selftest"], cwd=artifact,
                          capture_output=True, text=True, timeout=120)


def test_selftest_on_a_host_that_computes_otherwise_uses_the_source_model_and_its_limits(openvino_builds):
    """As if the build host had been the other CPU kind: the manifest says it verified the precision
    this host does not compute in, so the selftest compares with the source model at the limits of
    the precision computed here, and fails when they are broken."""
    _, _, artifacts = openvino_builds
    artifact = artifacts["openvino_bf16"]
    manifest_path = artifact / "manifest.json"
    manifest = read_json(manifest_path)
    here = manifest["verification"]["compute"]["precision"]
    other = next(p for p in ("bf16", "f32") if p != here)
    assert _selftest(artifact).stdout.count(": ok") == 1  # same precision as the build: its own outputs
    manifest["verification"]["compute"] = {"precision": other, "words": WORDS[other]}
    manifest_path.write_text(json.dumps(manifest))
    moved = _selftest(artifact)
    level = manifest["verification"]["limits_by_compute"][here]["level"]
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert f"this host computes in {WORDS[here]}" in moved.stdout and f"the build verified {WORDS[other]}" in moved.stdout
    assert f"logits: against the source model at the {level} limits: rel_l2" in moved.stdout
    manifest["verification"]["limits_by_compute"][here]["max_rel_l2"] = 1e-12
    manifest_path.write_text(json.dumps(manifest))
    broken = _selftest(artifact)
    assert broken.returncode == 1 and "MISMATCH" in broken.stdout


def test_a_precision_the_backend_does_not_build_fails_at_planning(workspace):
    workspace.recipe("cnn", cnn_recipe())
    result = workspace.run("+recipe=cnn", "target=onnxruntime_fp32", "target.precision=bf16", "mode=plan", check=False)
    assert result.code == 1
    assert "error: target.precision: onnxruntime does not build precision 'bf16' (fix: choose one of: fp32, int8)" in result.stderr
    missing = workspace.run("+recipe=cnn", "target=openvino_bf16", "~verify.tolerances.bf16", "mode=plan", check=False)
    assert "error: verify.tolerances.bf16: no tolerances for level 'bf16'" in missing.stderr


def _rehost(lock_path, target: str, flags: list[str]) -> None:
    """Rewrites a lock as a host with other CPU flags would have written it."""
    from builder.execute import step_key

    data = read_json(lock_path)
    for step in data["targets"][target]["steps"]:
        if "host" in step["description"]:
            step["description"]["host"]["cpu_flags"] = flags
            step["key"] = step_key(step["description"])
    lock_path.write_text(json.dumps(data))


def test_a_lock_from_another_cpu_kind_checks_here_and_still_catches_changes(workspace):
    recipe = workspace.recipe("cnn", cnn_recipe())
    workspace.run("+recipe=cnn", *QUICK)
    lock = recipe.with_name("cnn.lock.json")
    _rehost(lock, "onnxruntime_fp32", ["avx2"])
    check = workspace.run("+recipe=cnn", *QUICK, "mode=check")
    assert "note: verify, package were locked on another host (differs in cpu_flags" in check.stdout
    assert "lock check passed: 5 steps" in check.stdout
    changed = workspace.run("+recipe=cnn", *QUICK, "mode=check", "verify.latency.min_runs=21", check=False)
    assert "lock check failed at step 'verify': config changed: verify.latency.min_runs" in changed.stderr


# PyTorch's own AVX2 kernels and oneDNN limited to AVX2: the float arithmetic of a CPU without AVX-512.
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_digits_builds_the_same_model_on_another_cpu_kind(tmp_path):
    """The shipped weights make the export identical whatever kernels the CPU runs (training with
    AVX2 kernels gives other weights than with AVX-512 ones), and the lock written here checks there."""
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
    assert "error: model.weights: file not found: pkg://no_such_package/w.pt" in result.stderr
