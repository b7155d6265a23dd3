"""Issue-2 figures from one run: cold build vs no-op rebuild of a recipe, and the artifact's p50
latency vs torch eager fp32 on the same inputs (interleaved, medians: the machine is shared).

    .venv/bin/python benchmarks/build_and_latency.py [--recipe resnet50] [--target onnxruntime_fp32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import artifacts, load_artifact, mdbuild, p50_interleaved, print_host, torch_eager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="resnet50")
    parser.add_argument("--target", default="onnxruntime_fp32")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    build_args = [f"+recipe={args.recipe}", f"target={args.target}"]

    print_host()
    with tempfile.TemporaryDirectory() as scratch:
        workdir, cache = Path(scratch) / "work", Path(scratch) / "cache"
        workdir.mkdir()
        cold, output = mdbuild(build_args, workdir, cache)
        noop = statistics.median(mdbuild(build_args, workdir, cache)[0] for _ in range(3))
        print(f"cold build            {cold:8.2f} s")
        print(f"no-op rebuild (p50/3) {noop:8.2f} s")
        print(f"no-op / cold          {noop / cold:8.3f}   (target: < 0.05 and < 2 s)")

        model, feeds, manifest = load_artifact(artifacts(output)[-1])
        medians = p50_interleaved({"artifact": lambda: model.run(feeds),
                                   "torch eager fp32": torch_eager(manifest, feeds, workdir)}, rounds=args.rounds)
        print(f"artifact runtime {manifest['runtime']}")
        for name, value in medians.items():
            print(f"p50 {name:<18} {value:8.2f} ms")
        print(f"artifact / torch eager {medians['artifact'] / medians['torch eager fp32']:7.3f}   (target: <= 0.7)")


if __name__ == "__main__":
    main()
