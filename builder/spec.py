"""The resolved build request the core works on: plain data, no Hydra objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


_RUN_ONLY = ("mode", "traceback", "cache", "output", "lock")


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

    @property
    def artifact_config(self) -> dict[str, Any]:
        """Everything that shapes the artifact (not how or where mdbuild runs)."""
        return {key: value for key, value in self.config.items() if key not in _RUN_ONLY}

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.workdir / path
