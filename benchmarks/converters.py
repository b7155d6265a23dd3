"""How mdbuild chose its ONNX -> framework converters: every candidate converts each shipped recipe's
exported ONNX model, runs the recipe's verification samples, and is scored against the source
model's own outputs (worst rel L2 over the samples). Each conversion runs in its own process (one
SDK crashing or clashing with another cannot spoil the others); a candidate that is not installed
is reported as such.

    .venv/bin/python benchmarks/converters.py [--recipes tiny digits mobilenet_v2 lenet_mindspore]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import artifacts, mdbuild, print_host

CANDIDATES = {
    # name: (framework, what is measured)
    "onnx2torch+mdbuild": ("pytorch", "what target=pytorch ships: clean-ups, onnx2torch, torch.export, reloaded"),
    "onnx2torch": ("pytorch", "onnx2torch alone on the exported graph"),
    "onnx2pytorch": ("pytorch", "onnx2pytorch alone (pip install onnx2pytorch)"),
    "onnx2tf+mdbuild": ("tensorflow", "what target=tensorflow ships: onnx2tf, re-signed SavedModel, reloaded"),
    "onnx-tf": ("tensorflow", "onnx-tf's backend (pip install onnx-tf)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipes", nargs="+", default=["tiny", "digits", "mobilenet_v2", "lenet_mindspore"])
    parser.add_argument("--probe", nargs=3, metavar=("CANDIDATE", "ONNX", "SAMPLES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print("RESULT=" + json.dumps(_probe(*args.probe)))
        return
    print_host()
    with tempfile.TemporaryDirectory() as scratch:
        workdir, cache = Path(scratch) / "work", Path(scratch) / "cache"
        workdir.mkdir()
        rows = []
        for recipe in args.recipes:
            _, output = mdbuild([f"+recipe={recipe}", "target=onnxruntime_fp32", "verify=quick"], workdir, cache)
            artifact = artifacts(output)[-1]
            manifest = json.loads((artifact / "manifest.json").read_text())
            key = manifest["steps"]["export"]["key"]
            onnx_path = cache / "entries" / key[:2] / key / "out" / "model.onnx"
            for candidate in CANDIDATES:
                rows.append((recipe, candidate, _run_probe(candidate, onnx_path, artifact / "samples.npz")))
    print(f"{'recipe':<16} {'converter':<20} {'worst rel_l2':>12} {'seconds':>8}  note")
    for recipe, candidate, result in rows:
        if "error" in result:
            print(f"{recipe:<16} {candidate:<20} {'fails':>12} {'':>8}  {result['error'][:110]}")
        else:
            print(f"{recipe:<16} {candidate:<20} {result['rel_l2']:>12.2e} {result['seconds']:>8.1f}")
    print()
    for candidate, (framework, what) in CANDIDATES.items():
        print(f"{candidate:<20} -> {framework:<10} {what}")


def _run_probe(candidate: str, onnx_path: Path, samples: Path) -> dict:
    with tempfile.TemporaryDirectory() as scratch:  # converters write scratch files into the current directory
        proc = subprocess.run([sys.executable, __file__, "--probe", candidate, str(onnx_path), str(samples)],
                              capture_output=True, text=True, cwd=scratch)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT=")]
    if lines:
        return json.loads(lines[-1][len("RESULT="):])
    errors = [line.strip() for line in proc.stderr.splitlines() if "Error" in line or "error" in line]
    return {"error": (errors[-1] if errors else f"exit code {proc.returncode}")}


def _probe(candidate: str, onnx_path: str, samples_path: str) -> dict:
    """Converts, runs every verification sample, compares with the source model's outputs."""
    import importlib.util

    import numpy as np

    module = {"onnx2torch+mdbuild": "onnx2torch", "onnx2tf+mdbuild": "onnx2tf", "onnx-tf": "onnx_tf"}.get(candidate, candidate)
    if importlib.util.find_spec(module) is None:
        return {"error": f"not installed ({module})"}
    from builder.serving.accuracy import read_cases

    with np.load(samples_path) as samples:
        cases = read_cases(samples)
    started = time.perf_counter()
    try:
        run = _converted(candidate, Path(onnx_path))
    except Exception as exc:  # noqa: BLE001 - a converter's failure is a result here
        return {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
    seconds = time.perf_counter() - started
    worst = 0.0
    for case in cases:
        actual = run(case["input"])
        for position, reference in enumerate(case["output"].values()):
            value = np.asarray(actual[position], dtype=np.float64).reshape(reference.shape)
            worst = max(worst, float(np.linalg.norm(value - reference) / (np.linalg.norm(reference) or 1.0)))
    return {"rel_l2": worst, "seconds": seconds}


def _converted(candidate: str, onnx_path: Path):
    """A function from {input: array} to the list of outputs in the graph's order."""
    import onnx

    if candidate.endswith("+mdbuild"):
        from backends import get_backend

        backend = get_backend("pytorch" if candidate.startswith("onnx2torch") else "tensorflow")
        out = Path(tempfile.mkdtemp())
        settings = backend.compile(onnx_path, {}, {"intra_op_threads": 0, "inter_op_threads": 1}, out)
        model = backend.runtime().load(out, settings)
        return lambda feeds: list(model.run(feeds).values())
    graph = onnx.load(str(onnx_path))
    names = [value.name for value in graph.graph.input if value.name not in {t.name for t in graph.graph.initializer}]
    if candidate in ("onnx2torch", "onnx2pytorch"):
        import torch

        if candidate == "onnx2torch":
            from onnx2torch import convert

            module = convert(graph).eval()
        else:
            from onnx2pytorch import ConvertModel

            module = ConvertModel(graph, experimental=True).eval()

        def run_torch(feeds):
            with torch.inference_mode():
                result = module(*(torch.from_numpy(feeds[name]) for name in names))
            return [r.numpy() for r in (result if isinstance(result, (tuple, list)) else (result,))]

        return run_torch
    from onnx_tf.backend import prepare

    representation = prepare(graph)
    return lambda feeds: list(representation.run([feeds[name] for name in names]))


if __name__ == "__main__":
    main()
