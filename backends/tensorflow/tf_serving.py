"""TensorFlow Serving's model config for the artifact: the SavedModel (model_dir/1) is version 1 of the base
path model_dir, relative to the artifact directory (a server is given an absolute path to it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write(out: Path, model_dir: str, settings: dict[str, Any], config: dict[str, Any]) -> None:
    (out / "tf_serving").mkdir()
    (out / "tf_serving" / "models.config").write_text(
        "model_config_list {\n  config {\n"
        f'    name: "{config["recipe"]}"\n    base_path: "{model_dir}"\n    model_platform: "tensorflow"\n'
        "    model_version_policy { specific { versions: 1 } }\n  }\n}\n")
