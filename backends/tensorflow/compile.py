"""ONNX -> TensorFlow: onnx2tf converts the graph to a SavedModel (NCHW inputs kept as the recipe
declares them), which is then re-signed so that its serving signature carries the recipe's output
names (onnx2tf names them output_0, output_1, ...). The SavedModel is saved once, in a directory named
`1`: Triton's TensorFlow backend loads it as the version's model file (default_model_filename "1"), and
TensorFlow Serving as version 1 of the base path model_repository/<name>/1 (tf_serving/models.config)."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

from backends.onnx_graph import converter_record, signature
from builder.errors import MdbuildError, first_line

MODEL_DIR = "1"  # a version directory to TensorFlow Serving, the model file to Triton
SIGNATURE = "serving_default"


def compile_model(onnx_path: Path, config: dict[str, Any], out: Path) -> dict[str, Any]:
    import onnx
    import onnx2tf
    import tensorflow as tf

    tensors = signature(onnx.load(str(onnx_path), load_external_data=False))
    converted = Path("onnx2tf").resolve()  # the step's scratch directory: onnx2tf also writes .tflite files there
    # onnx2tf saves its shape-estimated graph over the file it is given: a copy, never the input entry.
    # (its directory, external weights included).
    onnx_path = Path(shutil.copytree(onnx_path.parent, Path("input").resolve())) / onnx_path.name
    kept = [name for name, _, dims in tensors["inputs"] if len(dims) >= 3]  # channels-first stay as declared
    try:
        onnx2tf.convert(
            input_onnx_file_path=str(onnx_path),
            output_folder_path=str(converted),
            output_signaturedefs=True,
            keep_ncw_or_nchw_or_ncdhw_input_names=kept,
            non_verbose=True,
        )
        loaded = tf.saved_model.load(str(converted))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - onnx2tf exits on unsupported graphs
        raise MdbuildError(f"onnx2tf cannot convert this model: {first_line(exc)}", "target.backend",
                           "build an ONNX Runtime or OpenVINO target (onnx2tf converts a subset of ONNX's graphs)") from exc
    function = loaded.signatures[SIGNATURE]
    produced = sorted(function.structured_outputs, key=_output_index)
    if len(produced) != len(tensors["outputs"]):
        raise MdbuildError(f"onnx2tf produced {len(produced)} outputs, the ONNX model has {len(tensors['outputs'])}",
                           "target.backend", "build an ONNX Runtime or OpenVINO target")
    renamed = dict(zip((name for name, _, _ in tensors["outputs"]), produced))
    specs = [tf.TensorSpec(dims, dtype, name=name) for name, dtype, dims in tensors["inputs"]]

    @tf.function(input_signature=specs)
    def serve(*arguments):
        result = function(**{spec.name: value for spec, value in zip(specs, arguments)})
        return {name: result[key] for name, key in renamed.items()}

    tf.saved_model.save(loaded, str(out / MODEL_DIR), signatures={SIGNATURE: serve})
    _reproducible_fingerprint(out / MODEL_DIR / "fingerprint.pb")
    return {
        "model_file": MODEL_DIR,
        "inputs": tensors["inputs"],
        "outputs": tensors["outputs"],
        "intra_op_threads": config["hardware"]["intra_op_threads"],
        "inter_op_threads": config["hardware"]["inter_op_threads"],
        "converter": converter_record("onnx2tf", format="SavedModel", inputs_layout_kept=kept),
    }


def _reproducible_fingerprint(path: Path) -> None:
    """TensorFlow writes a random `uuid` into the SavedModel's fingerprint, the only part of the saved
    model that differs between two saves (measured): it becomes one derived from the fingerprint's own
    content hashes, so the same model gives the same files."""
    from tensorflow.core.protobuf import fingerprint_pb2

    if not path.is_file():  # older TensorFlow writes none
        return
    fingerprint = fingerprint_pb2.FingerprintDef.FromString(path.read_bytes())
    hashes = (fingerprint.saved_model_checksum, fingerprint.graph_def_program_hash, fingerprint.signature_def_hash,
              fingerprint.saved_object_graph_hash, fingerprint.checkpoint_hash)
    fingerprint.uuid = str(int(hashlib.sha256(repr(hashes).encode()).hexdigest()[:32], 16))
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def _output_index(key: str) -> int:
    match = re.search(r"(\d+)$", key)
    return int(match.group(1)) if match else 0
