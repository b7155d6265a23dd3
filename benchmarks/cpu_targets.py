"""Issue-3 figures from one run: every CPU target of a recipe built in one sweep (sharing the
export), then each artifact's p50 latency at batch 1 against torch eager fp32 on the same input,
measured interleaved in this process.

    .venv/bin/python benchmarks/cpu_targets.py [--recipe resnet50]
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
    args = parser.parse_args()
    print_host()
    with tempfile.TemporaryDirectory() as scratch:
        workdir, cache = Path(scratch) / "work", Path(scratch) / "cache"
        workdir.mkdir()
        seconds, output = mdbuild(["-m", f"+recipe={args.recipe}", "target=" + ",".join(TARGETS)], workdir, cache)
        exports = sum(1 for line in output.splitlines() if line.split()[1:3] == ["export", "running"])
        print(f"sweep of {len(TARGETS)} targets: {seconds:.1f} s, export ran {exports} time(s)")
        runners, reports = {}, {}
        for artifact in artifacts(output):
            model, feeds, manifest = load_artifact(artifact)
            runners[manifest["target"]] = (lambda m, f: lambda: m.run(f))(model, feeds)
            reports[manifest["target"]] = json.loads((artifact / "report.json").read_text())
        runners["torch eager fp32"] = torch_eager(manifest, feeds, workdir)
        medians = p50_interleaved(runners, rounds=args.rounds)
        eager = medians.pop("torch eager fp32")
        print(f"{'target':<18} {'p50 ms':>8} {'/ eager':>8} {'goal':>6}  rel_l2    cosine   computed in")
        for target, value in medians.items():
            metrics = next(iter(reports[target]["outputs"].values()))["metrics"]
            goal = f"{GOALS[target]:.2f}" if target in GOALS else "-"
            computed = (reports[target].get("compute") or {}).get("precision", "graph types")
            print(f"{target:<18} {value:8.2f} {value / eager:8.3f} {goal:>6}  {metrics['rel_l2']:.2e}  "
                  f"{metrics['min_cosine']:.5f}  {computed}")
        print(f"{'torch eager fp32':<18} {eager:8.2f} {1:8.3f}")


if __name__ == "__main__":
    main()
