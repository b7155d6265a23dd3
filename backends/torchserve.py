"""A TorchServe model archive in the artifact (torchserve/<recipe>.mar), made with torch-model-archiver:
the verified model file, the backend's runtime module serve.py runs (runtime.py), the server's request
protocol (protocol.py), the recipe's image preprocessing and labels, and a handler
(torchserve_handler.py) that answers KServe v2 requests, and images with the top classes where the
recipe has labels. The pytorch target writes one unless serving.torchserve=false; onnxruntime targets
when serving.torchserve=true (TorchServe's workers then need onnxruntime). The archive is rewritten
with fixed times (the archiver stamps the time of day into it), so one build gives one archive."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from builder.errors import MdbuildError, missing_extra
from builder.versions import library_version

HERE = Path(__file__).parent
SPEC_FILE = "mdbuild.json"
SERVING = HERE.parent / "builder" / "serving"
# What the archive ships besides the model: in the package step's key (the plan hashes them).
SHIPPED = (HERE / "torchserve_handler.py", SERVING / "protocol.py", SERVING / "preprocess.py")
ARCHIVER = "torch-model-archiver"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def wanted(backend, serving: dict[str, Any]) -> bool:
    """Whether the artifact holds an archive: serving.torchserve, else the backend's default. Checked at
    plan time: an archive the backend cannot have, or no archiver installed, is refused before any step."""
    asked = serving["torchserve"]
    if asked and backend.torchserve is None:
        raise MdbuildError(f"{backend.name} artifacts have no TorchServe archive (its handler runs pytorch and "
                           "onnxruntime models)", "serving.torchserve",
                           "use target=pytorch or an onnxruntime target, or leave serving.torchserve unset")
    chosen = backend.torchserve if asked is None else asked
    if chosen and library_version(ARCHIVER) is None:
        raise missing_extra(ARCHIVER, "torch", "serving.torchserve")
    return bool(chosen)


def write(out: Path, model_dir: str, settings: dict[str, Any], config: dict[str, Any], runtime: Path) -> None:
    """torchserve/<recipe>.mar of the model in `model_dir`, run by the backend's `runtime` module."""
    recipe, serving = config["recipe"], config["serving"]
    labels = out / "labels.txt"
    spec = {"runtime": settings, "preprocess": config.get("preprocess") if labels.is_file() else None,
            "top_k": serving["top_k"], "scores": serving["scores"], "output": serving["output"],
            "allow_nonfinite": serving["allow_nonfinite"], "requests": config["requests"]}
    with tempfile.TemporaryDirectory(prefix="mdbuild-mar-") as scratch:
        staging = Path(scratch)
        extras = [Path(shutil.copyfile(source, staging / source.name)) for source in SHIPPED[1:]]
        extras.append(Path(shutil.copyfile(runtime, staging / "runtime.py")))
        (staging / SPEC_FILE).write_text(json.dumps(spec, indent=1, sort_keys=True))
        extras += [staging / SPEC_FILE] + ([labels] if labels.is_file() else [])
        command = [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", recipe, "--version", "1",
                   "--serialized-file", str(out / model_dir / settings["model_file"]),
                   "--handler", str(SHIPPED[0]), "--extra-files", ",".join(map(str, extras)),
                   "--export-path", str(staging), "--force"]
        done = subprocess.run(command, capture_output=True, text=True)
        archive = staging / f"{recipe}.mar"
        if done.returncode != 0 or not archive.is_file():
            lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise MdbuildError(f"torch-model-archiver failed: {lines[-1] if lines else f'exit {done.returncode}'}",
                               "serving.torchserve", "pip install 'mdbuild[torch]' (it brings torch-model-archiver)")
        (out / "torchserve").mkdir()
        _reproducible(archive, out / "torchserve" / f"{recipe}.mar")


def _reproducible(source: Path, destination: Path) -> None:
    """The archive with its entries in name order, fixed times, and the manifest's creation time fixed."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as copy:
        for name in sorted(original.namelist()):
            data = original.read(name)
            if name == "MAR-INF/MANIFEST.json":
                manifest = json.loads(data)
                manifest["createdOn"] = "01/01/1980 00:00:00"
                data = json.dumps(manifest, indent=4, sort_keys=True).encode()
            entry = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            copy.writestr(entry, data)
