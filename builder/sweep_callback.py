"""The Hydra callback that writes the sweep summary when a multirun ends (see builder.sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from builder.sweep import write_summary


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        written = write_summary(Path(config.hydra.sweep.dir).resolve())
        if written:
            print(f"sweep summary: {written[1]} ({written[2].name}, {written[0].name})", flush=True)
