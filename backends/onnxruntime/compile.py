"""ONNX Runtime CPU target: offline graph optimization, saved into the artifact.

The saved graph uses the portable levels (up to "extended"); the NCHWc layout rewrites that
"all" adds are machine specific, so serve.py applies them when it loads the model on its host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.errors import MdbuildError
from builder.sources.onnx import has_external_data

_OFFLINE = ("disabled", "basic", "extended")


def check(config: dict[str, Any]) -> None:
    level = config["target"]["options"]["graph_optimization"]
    if level not in _OFFLINE:
        raise MdbuildError(f"graph optimization level '{level}' cannot be saved portably",
                           "target.options.graph_optimization",
                           f"choose one of: {', '.join(_OFFLINE)} (the machine-specific 'all' level is applied at load time)")


def compile_model(onnx_path: Path, config: dict[str, Any], out: Path) -> dict[str, Any]:
    """Writes out/model.onnx and returns the runtime settings serve.py and verification use."""
    import onnxruntime

    check(config)

    level = config["target"]["options"]["graph_optimization"]
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = getattr(
        onnxruntime.GraphOptimizationLevel,
        {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}[level],
    )
    options.optimized_model_filepath = str(out / "model.onnx")
    options.log_severity_level = 3
    if has_external_data(onnx_path):  # else ORT saves references to the input's data file, which is not in out/
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.onnx.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return {
        "model_file": "model.onnx",
        "intra_op_threads": config["hardware"]["intra_op_threads"],
        "inter_op_threads": config["hardware"]["inter_op_threads"],
        "runtime_optimization": "all",
    }
