"""Recipe discovery: the user's ./recipes/*.yaml first, then the recipes shipped with mdbuild."""

from __future__ import annotations

from pathlib import Path

from builder.resources import resource_dir

DEFAULT_RECIPE = "tiny"


def recipe_files(workdir: Path) -> dict[str, tuple[Path, bool]]:
    """{name: (path, packaged)}; a user's recipe shadows a packaged one of the same name."""
    found: dict[str, tuple[Path, bool]] = {}
    for directory, packaged in ((workdir / "recipes", False), (resource_dir("recipes"), True)):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.yaml")):
            found.setdefault(path.stem, (path, packaged))
    return found
