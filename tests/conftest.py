"""Shared fixtures: a private cache per test, a work directory holding the tiny models and the
user's recipes, and a runner for the real `mdbuild` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

TESTS = Path(__file__).resolve().parent
MDBUILD = [sys.executable, "-m", "builder"]
QUICK = ["verify=quick"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def artifact(self) -> Path:
        last = self.stdout.strip().splitlines()[-1]
        assert last.startswith("artifact: "), self.stdout + self.stderr
        return Path(last.split(": ", 1)[1])

    def ran(self) -> list[str]:
        """The steps that ran (were not taken from the cache)."""
        return [line.split()[1] for line in self.stdout.splitlines() if line.startswith("[") and " running " in line]


class Workspace:
    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.cache = cache
        (root / "recipes").mkdir(parents=True, exist_ok=True)
        shutil.copy(TESTS / "tinynets.py", root / "tinynets.py")

    def recipe(self, name: str, body: dict, random_verification: bool = True) -> Path:
        """Writes recipes/<name>.yaml; a recipe with no data opts in to random verification inputs unless told not to."""
        if random_verification and not ({"evaluation", "calibration"} & set(body)) and "source" not in body.get("verify", {}):
            body = {**body, "verify": {**body.get("verify", {}), "source": "random"}}
        path = self.root / "recipes" / f"{name}.yaml"
        path.write_text("# @package _global_\n" + yaml.safe_dump(body, sort_keys=False))
        return path

    def run(self, *args: str, check: bool = True, env: dict | None = None) -> Result:
        environment = {**os.environ, "MDBUILD_CACHE_DIR": str(self.cache), **(env or {})}
        environment.pop("MDBUILD_TRACEBACK", None)
        repo = str(TESTS.parent)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, environment.get("PYTHONPATH")]))
        proc = subprocess.run([*MDBUILD, *args], cwd=self.root, env=environment, capture_output=True, text=True,
                              timeout=900)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check:
            assert proc.returncode == 0, f"mdbuild {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return result

    def cache_entries(self) -> list[Path]:
        return sorted((self.cache / "entries").glob("*/*")) if (self.cache / "entries").is_dir() else []


def pytest_report_header(config) -> list[str]:
    """What the suite ran on, at the top of every log: numerics differ between CPU kinds."""
    from builder.serving.host import describe_cpu

    lines = [f"cpu: {describe_cpu()}"]
    try:
        import openvino

        lines.append("openvino CPU capabilities: " + ", ".join(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")))
    except Exception as exc:  # no OpenVINO, or no CPU plugin: the header says so and the session goes on
        lines.append(f"openvino CPU capabilities: unknown ({type(exc).__name__})")
    return lines


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "work", tmp_path / "cache")


def cnn_recipe(**model_overrides) -> dict:
    model = {
        "source": "pytorch",
        "factory": "tinynets.small_cnn",
        "kwargs": {"classes": 5},
        "inputs": [{"name": "image", "shape": ["batch", 3, 16, 16], "dtype": "float32"}],
        "outputs": ["logits"],
        "dims": {"batch": 2},
    }
    model.update(model_overrides)
    return {"model": model}


@pytest.fixture(scope="session")
def two_heads_onnx(tmp_path_factory) -> Path:
    """A two-input, two-output ONNX model with a dynamic batch, exported once per session."""
    import torch

    sys.path.insert(0, str(TESTS))
    import tinynets

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "two_heads.onnx"
    model = tinynets.two_heads().eval()
    args = (torch.randn(1, 3, 16, 16), torch.randn(1, 4))
    torch.onnx.export(model, args, str(path), input_names=["image", "extra"], output_names=["score", "embedding"],
                      dynamic_axes={"image": {0: "n"}, "extra": {0: "n"}}, opset_version=18, dynamo=False)
    return path


def onnx_recipe(path: Path) -> dict:
    return {"model": {
        "source": "onnx",
        "path": str(path),
        "inputs": [{"name": "image", "shape": ["n", 3, 16, 16], "dtype": "float32"},
                   {"name": "extra", "shape": ["n", 4], "dtype": "float32"}],
        "outputs": ["score", "embedding"],
        "dims": {"n": 3},
    }}


def python(code: str, cwd: Path) -> None:
    """Runs a snippet in a fresh interpreter: TensorFlow and MindSpore models are made there, because
    loading TensorFlow first and then PyTorch's Triton or MindSpore crashes one process."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(TESTS.parent), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def triton_config(path: Path):
    """Parse a config.pbtxt with Triton's own ModelConfig protobuf schema (from tritonclient)."""
    import importlib.util

    import tritonclient
    from google.protobuf import text_format

    source = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return text_format.Parse(path.read_text(), module.ModelConfig())


def hiding(directory: Path, *packages: str) -> dict:
    """The environment of an interpreter in which `packages` cannot be imported (as if not installed)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        class Hide:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {packages!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
        sys.meta_path.insert(0, Hide())
    """))
    return {"PYTHONPATH": str(directory)}


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    """A real Prometheus: on the PATH, or Debian's package (2.42, the registry these machines reach: no
    pip wheel carries it) unpacked once into the user's cache."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mdbuild-tests" / "prometheus"
    binary = home / "usr" / "bin" / "prometheus"
    if not binary.is_file():
        import tempfile

        home.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=home.parent) as download:  # beside it: the rename stays on one disk
            fetched = subprocess.run(["apt-get", "download", "prometheus"], cwd=download, capture_output=True, text=True)
            assert fetched.returncode == 0, f"apt-get download prometheus failed: {fetched.stderr}"
            package, = Path(download).glob("prometheus_*.deb")
            unpacked = Path(download) / "unpacked"
            subprocess.run(["dpkg-deb", "-x", str(package), str(unpacked)], check=True)
            try:
                os.replace(unpacked, home)  # whole or not at all
            except OSError:  # another test run unpacked it first
                assert binary.is_file(), f"{home} exists without usr/bin/prometheus: remove it"
    return binary
