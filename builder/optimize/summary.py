"""Each optimization step leaves a summary of what it did (optimization.json), for the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUMMARY_FILE = "optimization.json"


def write_summary(out: Path, name: str, **facts: Any) -> None:
    (out / SUMMARY_FILE).write_text(json.dumps({"step": name, **facts}, indent=2, sort_keys=True))


def read_summary(directory: Path) -> dict[str, Any] | None:
    path = directory / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None
