"""The resolved build request the core works on: plain data, no Hydra objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BuildSpec:
    recipe: str
    recipe_path: Path | None  # None for a recipe stored in code
    packaged_recipe: bool
    config: dict[str, Any]  # resolved and schema-checked: model, target, hardware, verify, ...
    workdir: Path  # the directory mdbuild was started in; relative paths resolve against it

    @property
    def model(self) -> dict[str, Any]:
        return self.config["model"]

    @property
    def target(self) -> dict[str, Any]:
        return self.config["target"]

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.workdir / path
