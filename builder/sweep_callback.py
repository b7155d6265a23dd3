"""The Hydra callback that writes the sweep summary when a multirun ends (see builder.sweep), and
fails the sweep when any of its jobs failed (each job records its failure instead of raising, so that
the others run and the summary is written)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from builder.sweep import RESULT_FILE, read_results, write_summary


class SweepSummary(Callback):
    def __init__(self, candidates: bool = False) -> None:
        self.candidates = candidates  # target=auto's sweep: its failures are candidates not chosen

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """A sweep directory given again (hydra.sweep.dir) holds an earlier sweep's results: not this one's."""
        for old in Path(config.hydra.sweep.dir).resolve().glob(f"*/{RESULT_FILE}"):
            old.unlink(missing_ok=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        rows = read_results(sweep_dir)
        written = write_summary(sweep_dir, rows)
        if written:
            print(f"sweep summary: {written[1]} ({written[2].name}, {written[0].name})", flush=True)
        for target in sorted({str(row["target"]).split(":")[0] for row in rows}):  # "auto: openvino_int8" is auto's
            built = [row for row in rows if str(row["target"]).split(":")[0] == target and row["artifact"]]
            if len(built) > 1:  # a sweep of one target's options
                print(f"note: the lock keeps one entry per target: {target}'s is its job that finished last, and "
                      f"{built[0]['recipe']}-{target}-latest links that job's artifact", flush=True)
        failed = [row for row in rows if row["error"]]
        if failed and self.candidates:
            print(f"note: {len(failed)} of {len(rows)} candidates failed ({', '.join(row['job'] for row in failed)}): "
                  "not chosen", flush=True)
        elif failed:
            names = ", ".join(row["job"] for row in failed)
            print(f"error: sweep: {len(failed)} of {len(rows)} jobs failed ({names}); each job's error is above and in "
                  f"{written[1]}", file=sys.stderr, flush=True)
            sys.exit(1)
