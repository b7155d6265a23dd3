"""Issue-15 figure for target=auto: a recipe's candidates built from an empty cache, raced and one
chosen; then the same command again from the warm cache, several times. Prints each run's wall time
and race time, every candidate's raced p50 run by run, and whether the choice held: with select.margin
as configured (the lock's choice is kept within it), and the raw fastest of each race.

    .venv/bin/python benchmarks/auto_choice.py [--recipe resnet50] [--targets a,b,...] [--reruns 3]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

from _common import mdbuild, print_host

TARGETS = "onnxruntime_fp32,onnxruntime_int8,openvino_fp32,openvino_fp16,openvino_bf16,openvino_int8"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="resnet50")
    parser.add_argument("--targets", default=TARGETS)
    parser.add_argument("--reruns", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="a Hydra override for every run")
    args = parser.parse_args()
    print_host()
    command = [f"+recipe={args.recipe}", "target=auto", f"select.targets=[{args.targets}]", *args.set]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "work").mkdir()
        raced: dict[str, list[float]] = {}
        chosen, fastest = [], []
        for run in range(1 + args.reruns):
            wall, output = mdbuild(command, root / "work", root / "cache")
            race_s = float(re.search(r"raced in ([\d.]+) s", output).group(1))
            lock = json.loads((root / "work" / "recipes" / f"{args.recipe}.lock.json").read_text())["targets"]["auto"]
            for row in lock["table"]:
                raced.setdefault(row["target"], []).append(row["race_p50_ms"] or float("nan"))
            chosen.append(lock["chosen"])
            fastest.append(min((row for row in lock["table"] if row["race_p50_ms"]), key=lambda row: row["race_p50_ms"])["target"])
            print(f"run {run} ({'empty cache' if run == 0 else 'warm cache'}): {wall:6.1f} s wall, race {race_s:4.1f} s, "
                  f"chose {lock['chosen']} ({lock['why']})")
        print("raced p50 ms, run by run:")
        for target, values in raced.items():
            print(f"  {target:<18} " + "  ".join(f"{value:8.3f}" for value in values))
        print(f"choice (select.margin {lock['margin']}): {' '.join(chosen)}: "
              f"{'held' if len(set(chosen)) == 1 else 'changed'} over {len(chosen)} runs")
        print(f"raw fastest of each race: {' '.join(fastest)}: {len(set(fastest))} distinct")


if __name__ == "__main__":
    main()
