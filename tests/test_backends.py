"""A backend is one folder, discovered: a new one, written outside mdbuild's tree with its own options,
its own optimization step and its own target file, builds, verifies, serves its Triton config and
pins its requirements, and no file of mdbuild changes."""

import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import QUICK, cnn_recipe, read_json

pytestmark = pytest.mark.torch

FILES = {
    "backends/plainort/__init__.py": '''
        from dataclasses import dataclass

        from backends import Backend, Precision, Triton
        from builder.optimize import Optimization


        @dataclass
        class PlainOptions:
            level: str = "disabled"  # ONNX Runtime's optimization level when the artifact loads


        @dataclass
        class StripDocOptions:
            keep_producer: bool = True


        BACKEND = Backend(
            name="plainort", package="onnxruntime", distribution="onnxruntime", extra="onnxruntime",
            precisions={"fp32": Precision("fp32")}, compile_version=1, libraries=("onnxruntime", "onnx"),
            reads=("hardware.intra_op_threads",), options=PlainOptions,
            optimizations=(Optimization("strip_doc", "onnx", "backends.plainort.strip_doc", 1, ("onnx",),
                                        options=StripDocOptions),),
            triton=Triton("onnxruntime"), requirements=("onnxruntime", "onnx"),
            host="backends.plainort.host:facts",  # its compiled model depends on them (as an engine on a GPU)
        )
    ''',
    "backends/plainort/compile.py": '''
        import shutil

        from builder.errors import MdbuildError


        def check(config):
            if config["target"]["options"]["level"] not in ("disabled", "basic"):
                raise MdbuildError("not a level", "target.options.level", "choose disabled or basic")


        def compile_model(onnx_path, config, out):
            shutil.copyfile(onnx_path, out / "model.onnx")
            return {"model_file": "model.onnx", "level": config["target"]["options"]["level"],
                    "threads": config["hardware"]["intra_op_threads"]}
    ''',
    "backends/plainort/runtime.py": '''
        from pathlib import Path

        import numpy as np
        import onnxruntime

        _LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC"}


        class LoadedModel:
            def __init__(self, path, settings):
                options = onnxruntime.SessionOptions()
                options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, _LEVELS[settings["level"]])
                self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                types = {"tensor(float)": "float32"}
                self.inputs = {i.name: (types[i.type], [d if isinstance(d, int) else None for d in i.shape])
                               for i in self.session.get_inputs()}
                self.outputs = {o.name: (types[o.type], [d if isinstance(d, int) else None for d in o.shape])
                                for o in self.session.get_outputs()}

            def run(self, feeds, output_names=None):
                names = list(output_names or self.outputs)
                return dict(zip(names, (np.asarray(v) for v in self.session.run(names, feeds))))


        def load(model_dir, settings):
            return LoadedModel(Path(model_dir) / settings["model_file"], settings)
    ''',
    "backends/plainort/host.py": '''
        def facts():
            return {"device": "simulated accelerator", "driver": "1.0"}
    ''',
    "backends/plainort/strip_doc.py": '''
        import onnx

        from builder.optimize.summary import write_summary


        def reads(config):
            return ["strip_doc.keep_producer"]


        def run(ctx, inputs, out):
            model = onnx.load(str(inputs["model"] / "model.onnx"))
            for node in model.graph.node:
                node.doc_string = ""
            if not ctx.config["strip_doc"]["keep_producer"]:
                model.producer_name = ""
            onnx.save(model, str(out / "model.onnx"))
            write_summary(out, "strip_doc", nodes=len(model.graph.node))
    ''',
    "conf/target/plainort_fp32.yaml": '''
        defaults:
          - options: plainort

        name: plainort_fp32
        backend: plainort
        precision: fp32
        optimize: [strip_doc]
    ''',
    # How this test adds its folder to mdbuild's `backends` package without writing into the tree.
    "site/sitecustomize.py": '''
        import os

        import backends

        backends.__path__.append(os.path.join(os.environ["PLUGIN_ROOT"], "backends"))
    ''',
}


def _tree_state() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "backends", "builder", "conf"],
                          capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout


def test_a_new_backend_is_its_folder_and_a_target_file(workspace, tmp_path):
    plugin = tmp_path / "plugin"
    for name, text in FILES.items():
        (plugin / name).parent.mkdir(parents=True, exist_ok=True)
        (plugin / name).write_text(textwrap.dedent(text).lstrip())
    before = _tree_state()
    workspace.recipe("cnn", cnn_recipe())
    env = {"PLUGIN_ROOT": str(plugin), "PYTHONPATH": str(plugin / "site")}
    args = ["+recipe=cnn", *QUICK, "target=plainort_fp32", f"hydra.searchpath=[file://{plugin / 'conf'}]"]
    result = workspace.run(*args, "target.options.level=basic", "strip_doc.keep_producer=false", env=env)
    assert result.ran() == ["export", "reference", "strip_doc", "compile", "verify", "package"]
    artifact = result.artifact
    assert "verify: passed" in result.stdout
    assert 'backend: "onnxruntime"' in (artifact / "model_repository" / "cnn" / "config.pbtxt").read_text()
    assert {line.split("==")[0] for line in (artifact / "requirements.txt").read_text().split()} == {"numpy", "onnxruntime", "onnx"}
    manifest = read_json(artifact / "manifest.json")
    assert manifest["config"]["target"]["options"] == {"level": "basic"} and manifest["config"]["strip_doc"] == {"keep_producer": False}
    assert read_json(artifact / "report.json")["optimizations"][0]["step"] == "strip_doc"
    bad = workspace.run(*args, "target.options.level=all", "mode=plan", check=False, env=env)
    assert "error: target.options.level: not a level (fix: choose disabled or basic)" in bad.stderr
    typo = workspace.run(*args, "target.options.levle=basic", "mode=plan", check=False, env=env)
    assert "target.options.levle: no such key (fix: valid keys of target.options: level)" in typo.stderr
    lock_path = workspace.root / "recipes" / "cnn.lock.json"
    compile_step = next(step for step in read_json(lock_path)["targets"]["plainort_fp32"]["steps"] if step["id"] == "compile")
    assert compile_step["description"]["host"] == {"device": "simulated accelerator", "driver": "1.0"}
    check = workspace.run(*args, "target.options.level=basic", "strip_doc.keep_producer=false", "mode=check", env=env)
    assert "lock check passed: 6 steps" in check.stdout
    assert _tree_state() == before  # nothing of mdbuild was written
