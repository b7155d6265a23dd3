"""Reproducible identity: a shipped recipe built cold in two clones with two empty caches gives the
same lock file and the same artifact paths, whatever order a sweep builds its targets in and however
fast verification measured them."""

import pytest

from conftest import QUICK, Workspace, read_json

pytestmark = pytest.mark.torch
TARGETS = ["onnxruntime_int8", "openvino_fp16", "openvino_int8"]


def _cold_sweep(root, targets):
    workspace = Workspace(root / "work", root / "cache")
    result = workspace.run("-m", "+recipe=digits", *QUICK, "target=" + ",".join(targets))
    artifacts = sorted(line.split("/")[-1] for line in result.stdout.splitlines() if line.startswith("artifact: "))
    return workspace, artifacts


def test_two_cold_builds_give_the_same_lock_and_artifact_paths(tmp_path):
    # The second clone builds in the opposite order: OpenVINO's IR must not depend on what the process
    # converted before (it names new nodes from a per-process counter), nor the keys on latency.
    first, first_artifacts = _cold_sweep(tmp_path / "one", TARGETS)
    second, second_artifacts = _cold_sweep(tmp_path / "two", TARGETS[::-1])
    assert len(first_artifacts) == 3 and first_artifacts == second_artifacts
    lock = (first.root / "recipes" / "digits.lock.json").read_text()
    assert lock == (second.root / "recipes" / "digits.lock.json").read_text()
    reports = [read_json(first.root / "artifacts" / name / "report.json")["latency"]["p50_ms"] for name in first_artifacts]
    assert all(p50 > 0 for p50 in reports)  # measured and reported, just not part of the identity
    manifest = read_json(first.root / "artifacts" / first_artifacts[0] / "manifest.json")
    assert manifest["reports"] == ["report.json", "report.md"] and "report.json" not in manifest["files"]


def test_a_tolerance_level_a_target_cannot_use_is_not_in_its_verify_key(tmp_path):
    workspace, _ = _cold_sweep(tmp_path, ["openvino_int8", "openvino_bf16"])
    plan = workspace.run("-m", "+recipe=digits", *QUICK, "mode=plan", "target=openvino_int8,openvino_bf16",
                         "verify.tolerances.fp16.max_rel_l2=0.02").stdout
    verify_lines = [line.split() for line in plan.splitlines() if line.split()[:1] == ["verify"]]
    assert [line[-1] for line in verify_lines] == ["cached", "cached"], plan  # int8 and bf16/fp32 limits only
    changed = workspace.run("+recipe=digits", *QUICK, "mode=plan", "target=openvino_bf16",
                            "verify.tolerances.bf16.min_cosine=0.999").stdout
    assert "config changed: verify.tolerances.bf16.min_cosine" in changed
