"""Breadth: 15 common architectures, built as a new user would (seeded random weights, random
verification and calibration opted in), for every CPU target at fp32 and int8. Each cell is a pass, an
honest gate failure or a clear error, with the first words of why; the table goes to stdout.

    .venv/bin/python benchmarks/breadth.py [--only resnet18,bert] [--targets onnxruntime_fp32,...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import REPO, print_host

TARGETS = ["onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_int8"]
FACTORIES = "breadth_models"


def _image(size: int, channels: int = 3) -> list[dict]:
    return [{"name": "pixels", "shape": ["batch", channels, size, size], "dtype": "float32"}]


_TOKENS = [{"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64", "low": 0, "high": 1000},
           {"name": "attention_mask", "shape": ["batch", "seq"], "dtype": "int64", "low": 0, "high": 2}]

# name: (factory, kwargs, inputs, dims)
MODELS = {
    "resnet18": ("torchvision_model", {"name": "resnet18"}, _image(128), {"batch": 1}),
    "mobilenet_v3_small": ("torchvision_model", {"name": "mobilenet_v3_small"}, _image(128), {"batch": 1}),
    "efficientnet_b0": ("torchvision_model", {"name": "efficientnet_b0"}, _image(128), {"batch": 1}),
    "convnext_tiny": ("torchvision_model", {"name": "convnext_tiny"}, _image(128), {"batch": 1}),
    "vit_b_16": ("torchvision_model", {"name": "vit_b_16"}, _image(224), {"batch": 1}),
    "swin_t": ("torchvision_model", {"name": "swin_t"}, _image(224), {"batch": 1}),
    "deeplabv3": ("deeplabv3", {}, _image(128), {"batch": 1}),
    "bert": ("text", {"kind": "bert"}, _TOKENS, {"batch": 2, "seq": 32}),
    "distilbert": ("text", {"kind": "distilbert"}, _TOKENS, {"batch": 2, "seq": 32}),
    "roberta": ("text", {"kind": "roberta"}, _TOKENS, {"batch": 2, "seq": 32}),
    "gpt2": ("text", {"kind": "gpt2"}, _TOKENS, {"batch": 2, "seq": 32}),
    "t5_encoder": ("text", {"kind": "t5"}, _TOKENS, {"batch": 2, "seq": 32}),
    "hf_vit": ("vit", {}, _image(32), {"batch": 1}),
    "whisper_encoder": ("whisper_encoder", {}, [{"name": "input_features", "shape": ["batch", 80, 100],
                                                  "dtype": "float32"}], {"batch": 1}),
    "wav2vec2": ("wav2vec2", {}, [{"name": "input_values", "shape": ["batch", 4000], "dtype": "float32"}], {"batch": 1}),
}


def recipe(name: str) -> dict:
    factory, kwargs, inputs, dims = MODELS[name]
    return {"model": {"source": "pytorch", "factory": f"{FACTORIES}.{factory}", "kwargs": kwargs, "inputs": inputs,
                      "outputs": ["output"], "dims": dims},
            "verify": {"source": "random", "latency": {"max_seconds": 1.0, "min_runs": 20, "warmup_runs": 2}},
            "calibration": {"source": "random", "samples": 16}}


def build(name: str, target: str, workdir: Path, cache: Path) -> tuple[str, str, float]:
    """(pass | GATE | ERROR, a short why, seconds)."""
    env = {**os.environ, "MDBUILD_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "builder", f"+recipe={name}", f"target={target}", "verify=quick"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if proc.returncode == 0:
        line = next((l for l in proc.stdout.splitlines() if l.startswith("verify: ")), "")
        return "pass", line.split(" · ")[-2] if " · " in line else "", seconds
    error = next((l for l in proc.stderr.splitlines() if l.startswith("error: ")), proc.stderr.strip()[-200:])
    kind = "GATE" if "verification failed" in error else "ERROR"
    return kind, error[len("error: "):][:150], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(MODELS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    print_host()
    names, targets = args.only.split(","), args.targets.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        workdir, cache = Path(scratch) / "work", Path(scratch) / "cache"
        (workdir / "recipes").mkdir(parents=True)
        shutil.copy(Path(__file__).with_name(f"{FACTORIES}.py"), workdir)
        for name in names:
            (workdir / "recipes" / f"{name}.yaml").write_text("# @package _global_\n" + yaml.safe_dump(recipe(name)))
        counts: dict[str, int] = {}
        print(f"{'model':<18} {'target':<18} {'result':<6} {'s':>6}  why")
        for name in names:
            for target in targets:
                kind, why, seconds = build(name, target, workdir, cache)
                counts[kind] = counts.get(kind, 0) + 1
                print(f"{name:<18} {target:<18} {kind:<6} {seconds:6.1f}  {why}", flush=True)
        print("totals: " + ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items())))


if __name__ == "__main__":
    main()
