"""The serving runtime shipped inside every artifact (copied to <artifact>/serving/): stdlib, numpy,
the backend's runtime and, for image inputs, Pillow. Nothing here may import mdbuild itself."""

from pathlib import Path

SERVING_DIR = Path(__file__).resolve().parent  # what the package step copies into the artifact
