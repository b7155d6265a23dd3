"""Importing mdbuild, --help, planning and a fully cached rebuild import no ML SDK."""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUICK, cnn_recipe

HEAVY = ("torch", "tensorflow", "onnxruntime", "openvino", "tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings", "cuda",
         "mindspore")
REPO = Path(__file__).resolve().parents[1]
PROBE = """
import atexit, json, sys
atexit.register(lambda: sys.stderr.write("HEAVY=" + json.dumps(sorted(m for m in {heavy} if m in sys.modules)) + "\\n"))
sys.argv = ["mdbuild"] + {args}
from builder.cli import main
main()
"""


def heavy_modules(workspace, *args) -> list:
    env = {**os.environ, "MDBUILD_CACHE_DIR": str(workspace.cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, args=list(args))], cwd=workspace.root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY=")][-1]
    return json.loads(line[len("HEAVY="):])


def test_importing_the_packages_is_cheap():
    code = "import sys, builder, builder.cli, builder.plan, builder.build, backends, backends.onnxruntime; " \
           f"print([m for m in {HEAVY} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.torch
def test_help_plan_and_cached_rebuild_import_no_sdk(workspace):
    workspace.recipe("cnn", cnn_recipe())
    assert heavy_modules(workspace, "--help") == []
    assert heavy_modules(workspace, "+recipe=cnn", *QUICK, "mode=plan") == []
    workspace.run("+recipe=cnn", *QUICK)
    assert heavy_modules(workspace, "+recipe=cnn", *QUICK) == []
    assert heavy_modules(workspace, "+recipe=cnn", *QUICK, "mode=check") == []


@pytest.mark.torch
@pytest.mark.tensorrt
def test_a_tensorrt_plan_and_cached_rebuild_import_no_sdk(workspace):
    """Host facts (nvidia-smi, which SDKs are installed) are found without importing an SDK."""
    workspace.recipe("cnn", cnn_recipe())
    args = ("+recipe=cnn", "target=tensorrt_fp16", *QUICK)
    assert heavy_modules(workspace, *args, "mode=plan") == []
    workspace.run(*args)
    assert heavy_modules(workspace, *args) == []


@pytest.mark.torch
def test_plan_prints_keys_cache_state_and_reasons(workspace):
    workspace.recipe("cnn", cnn_recipe())
    before = workspace.run("+recipe=cnn", *QUICK, "mode=plan").stdout
    assert re.search(r"export +after -", before) and "will run: never built here" in before
    assert re.search(r"verify +after compile, reference", before) and "key pending" in before
    workspace.run("+recipe=cnn", *QUICK)
    after = workspace.run("+recipe=cnn", *QUICK, "mode=plan").stdout.splitlines()[1:]
    assert len(after) == 5 and all(line.rstrip().endswith("cached") for line in after)
    keys = [line.split()[-2] for line in after]
    assert all(len(key) == 64 for key in keys)
    changed = workspace.run("+recipe=cnn", *QUICK, "mode=plan", "verify.samples=3").stdout
    assert re.search(r"reference +after -", changed) and "config changed: verify.samples" in changed
    assert re.search(r"export +after -", changed) and changed.splitlines()[1].rstrip().endswith("cached")


@pytest.mark.tensorflow
def test_a_signature_read_from_the_model_keeps_planning_free_of_sdks(workspace):
    """The input signature of a Keras file is read in a child process and remembered: mdbuild's own
    process imports no SDK for planning, and none for a cached rebuild."""
    from test_tensorflow import save_tiny_keras

    save_tiny_keras(workspace, "tiny.keras")
    workspace.recipe("k", {"model": {"source": "tensorflow", "path": "tiny.keras", "outputs": ["scores"]}})
    assert heavy_modules(workspace, "+recipe=k", *QUICK, "mode=plan") == []
    workspace.run("+recipe=k", *QUICK)
    assert heavy_modules(workspace, "+recipe=k", *QUICK) == []
