"""Issue-3 figures from one run: every CPU target of a recipe built in one sweep (sharing the
export), then each artifact's p50 latency at batch 1 against torch eager fp32 on the same input,
measured interleaved in this process.

    .venv/bin/python benchmarks/cpu_targets.py [--recipe resnet50] [--targets a,b] [--set key=value ...]

The minilm figures of the README (issue 13):

    .venv/bin/python benchmarks/cpu_targets.py --recipe minilm \
        --targets onnxruntime_fp32,openvino_fp32,openvino_fp16,onnxruntime_int8,openvino_int8 \
        --set quantization.accuracy_control=true [--largest]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import artifacts, load_artifact, mdbuild, p50_interleaved, print_host, torch_eager

TARGETS = ["onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_fp16", "openvino_bf16", "openvino_int8"]
GOALS = {"openvino_int8": 0.35, "onnxruntime_int8": 0.5, "onnxruntime_fp32": 0.7}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="resnet50")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets to sweep")
    parser.add_argument("--set", action="append", default=[], help="a Hydra override for every target")
    parser.add_argument("--largest", action="store_true", help="also time the largest verification case")
    args = parser.parse_args()
    print_host()
    with tempfile.TemporaryDirectory() as scratch:
        workdir, cache = Path(scratch) / "work", Path(scratch) / "cache"
        workdir.mkdir()
        seconds, output = mdbuild(["-m", f"+recipe={args.recipe}", f"target={args.targets}", *args.set], workdir, cache)
        exports = sum(1 for line in output.splitlines() if line.split()[1:3] == ["export", "running"])
        print(f"sweep of {args.targets}: {seconds:.1f} s, export ran {exports} time(s)")
        built = [(artifact, json.loads((artifact / "report.json").read_text())) for artifact in artifacts(output)]
        for largest in sorted({False, args.largest}):
            _timed(built, largest, workdir, args.rounds)


def _timed(built: list, largest: bool, workdir: Path, rounds: int) -> None:
    """p50 of every artifact and of torch eager on one verification case, interleaved, and the table."""
    runners, reports = {}, {}
    for artifact, report in built:
        model, feeds, manifest = load_artifact(artifact, largest)
        runners[manifest["target"]] = (lambda m, f: lambda: m.run(f))(model, feeds)
        reports[manifest["target"]] = report
    runners["torch eager fp32"] = torch_eager(manifest, feeds, workdir)
    medians = p50_interleaved(runners, rounds=rounds)
    eager = medians.pop("torch eager fp32")
    print(f"\ninput: {', '.join(f'{name} {list(array.shape)}' for name, array in feeds.items())}")
    print(f"{'target':<18} {'p50 ms':>8} {'/ eager':>8} {'goal':>6}  rel_l2    cosine   score   computed in  "
          "float by accuracy control")
    for target, value in medians.items():
        report = reports[target]
        metrics = next(iter(report["outputs"].values()))["metrics"]
        goal = f"{GOALS[target]:.2f}" if target in GOALS else "-"
        computed = (report.get("compute") or {}).get("precision", "graph types")
        score = f"{report['evaluation']['artifact_score']:.2f}" if report.get("evaluation") else "-"
        control = next((str(o["returned_to_float"]) for o in report.get("optimizations", []) if o.get("accuracy_control")), "-")
        print(f"{target:<18} {value:8.2f} {value / eager:8.3f} {goal:>6}  {metrics['rel_l2']:.2e}  "
              f"{metrics['min_cosine']:.5f}  {score:>6}  {computed:<11}  {control}")
    print(f"{'torch eager fp32':<18} {eager:8.2f} {1:8.3f}")

if __name__ == "__main__":
    main()
