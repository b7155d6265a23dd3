"""TensorRT figures from one run, on a CPU-only host: the cold build of a recipe for a TensorRT target
(export + precision + engine) against the no-op rebuild; the error of each prepared graph (the graph
the engine computes, run with ONNX Runtime CPU) against the source; digits int8 top-1 against the
source; engine sizes; and how many files outside backends/tensorrt/ the TensorRT change touched.

    .venv/bin/python benchmarks/tensorrt.py [--base bfac784]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from _common import REPO, artifacts, mdbuild, print_host


def step_seconds(output: str) -> dict[str, float]:
    return {line.split()[1]: float(line.split()[3].rstrip("s")) for line in output.splitlines()
            if line.startswith("[") and " done " in line}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="bfac784", help="the commit before the TensorRT backend")
    args = parser.parse_args()

    print_host()
    with tempfile.TemporaryDirectory() as scratch:
        workdir, cache = Path(scratch) / "work", Path(scratch) / "cache"
        workdir.mkdir()
        build = ["+recipe=resnet50", "target=tensorrt_fp16"]
        cold, output = mdbuild(build, workdir, cache)
        noop = statistics.median(mdbuild(build, workdir, cache)[0] for _ in range(3))
        print(f"resnet50 tensorrt_fp16 cold build {cold:7.2f} s   steps: "
              + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in step_seconds(output).items()))
        print(f"no-op rebuild (p50 of 3)          {noop:7.2f} s")
        print(f"no-op / cold                      {noop / cold:7.3f}   (target: < 0.05 and < 2 s)")

        print(f"{'recipe':<9} {'target':<15} {'rel L2':>9} {'min cos':>9} {'top-1':>13} {'engine MB':>10} {'graph MB':>9}")
        for recipe, targets in (("resnet50", ["tensorrt_fp32", "tensorrt_fp16", "tensorrt_int8"]),
                                ("digits", ["tensorrt_fp32", "tensorrt_fp16", "tensorrt_int8"])):
            _, output = mdbuild(["-m", f"+recipe={recipe}", "target=" + ",".join(targets)], workdir, cache)
            for artifact in artifacts(output):
                artifact = workdir / artifact
                report = json.loads((artifact / "report.json").read_text())
                metrics = next(iter(report["outputs"].values()))["metrics"]
                evaluation = report.get("evaluation")
                top1 = f"{evaluation['artifact_score']:.2f} ({evaluation['source_score']:.2f})" if evaluation else "-"
                folder = artifact / "model_repository" / recipe / "1"
                engine = folder / "model.rtx.engine"
                print(f"{recipe:<9} {report['target']:<15} {metrics['rel_l2']:9.2e} {metrics['min_cosine']:9.6f} {top1:>13} "
                      f"{engine.stat().st_size / 1e6:10.1f} {(folder / 'model.onnx').stat().st_size / 1e6:9.1f}")

    changed = subprocess.run(["git", "diff", "--name-only", args.base, "HEAD", "--", "."], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    own = ("backends/tensorrt/", "conf/target/tensorrt_", "tests/", "benchmarks/", "README.md", "pyproject.toml")
    shared = [path for path in changed if not path.startswith(own)]
    print(f"files changed from {args.base} to HEAD: {len(changed)}; shared mdbuild code among them "
          f"(not the backend's folder, its target files, tests, benchmarks, README, pyproject): {len(shared)}")
    print("  " + " ".join(shared))


if __name__ == "__main__":
    main()
