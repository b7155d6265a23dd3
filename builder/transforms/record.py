"""Each optimization step leaves transform.json: what it did, for the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORD_FILE = "transform.json"


def write_record(out: Path, name: str, **facts: Any) -> None:
    (out / RECORD_FILE).write_text(json.dumps({"step": name, **facts}, indent=2, sort_keys=True))


def read_record(directory: Path) -> dict[str, Any] | None:
    path = directory / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None
