"""Typed configuration: the dataclasses Hydra validates every recipe and override against.

YAML files under conf/ and recipes/ only set values; a key that is not declared here is a typo and
fails composition with the key's full name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

SOURCES = ("pytorch", "torchscript", "tensorflow", "onnx")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")


@dataclass
class InputSpec:
    name: str = MISSING
    # Each entry is a size or the name of a dynamic dimension (e.g. "batch"); see model.dims.
    shape: List[Any] = MISSING
    dtype: str = "float32"
    # Range of the seeded verification values for integer inputs (token ids, indices).
    low: int = 0
    high: int = 100


@dataclass
class ModelConfig:
    source: str = MISSING
    factory: Optional[str] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)
    weights: Optional[str] = None
    path: Optional[str] = None
    seed: int = 0
    # Empty: read from the model file (TensorFlow SavedModel / .keras / .h5 only).
    inputs: List[InputSpec] = field(default_factory=list)
    outputs: List[str] = field(default_factory=lambda: ["output"])
    # Concrete sizes for dynamic dimensions when exporting and verifying.
    dims: Dict[str, int] = field(default_factory=dict)
    opset: int = 18
    # torch.onnx exporter: "torchscript" (fast, one file) or "dynamo" (torch.export based).
    exporter: str = "torchscript"


@dataclass
class TargetConfig:
    name: str = MISSING
    backend: str = MISSING
    precision: str = "fp32"
    # Optimization steps the target itself needs (e.g. int8 quantization), after the recipe's own.
    steps: List[str] = field(default_factory=list)
    # ONNX Runtime: offline graph optimization level saved into the artifact.
    graph_optimization: str = "extended"


@dataclass
class HardwareConfig:
    # 0 lets the runtime choose (one thread per physical core).
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    # OpenVINO: PERFORMANCE_HINT (latency | throughput) and NUM_STREAMS (0: from the hint).
    performance_hint: str = "latency"
    streams: int = 0


@dataclass
class PreprocessConfig:
    """How an image file becomes an input tensor (calibration, evaluation and, later, serving)."""

    resize: Optional[int] = None  # shorter side, bilinear
    center_crop: Optional[int] = None
    color: str = "RGB"  # RGB | BGR | L (grayscale)
    scale: float = 0.00392156862745098  # 1/255: pixel values to [0, 1]
    mean: List[float] = field(default_factory=list)
    std: List[float] = field(default_factory=list)
    layout: str = "NCHW"  # NCHW | NHWC


@dataclass
class DataConfig:
    """A data set: a .npz/.npy file, a folder of images, a Python factory, or (calibration only, as
    an explicit opt-in) seeded random inputs."""

    source: Optional[str] = None  # npz | images | factory | random; null: none declared
    path: Optional[str] = None
    factory: Optional[str] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)
    samples: Optional[int] = None  # at most this many, in a stable order; null: all (random: required)


@dataclass
class EvaluationConfig(DataConfig):
    metric: str = "top1"  # built in: top1; else the import path of fn(outputs, labels) -> score
    output: Optional[str] = None  # the model output the metric reads (default: the first)
    max_drop: float = 1.0  # points the artifact may lose against the source model


@dataclass
class ServingConfig:
    """Defaults of the generated serve.py (its command line overrides the batching and size ones)."""

    max_batch_size: int = 1  # dynamic batching: most rows per batch; 1 switches it off
    max_queue_delay_ms: float = 2.0
    max_body_bytes: int = 67108864
    allow_nonfinite: bool = False  # NaN / Inf in float inputs answer 400 unless true
    labels: Optional[str] = None  # a text file, one class name per line: enables POST .../classify for images
    top_k: int = 5
    scores: str = "softmax"  # softmax | raw
    output: Optional[str] = None  # the output classified (default: the first)


@dataclass
class QuantizationConfig:
    # ONNX Runtime (ort_quantize): static QDQ with calibration, or dynamic (weights only, no data).
    mode: str = "static"
    per_channel: bool = True
    activation_type: str = "uint8"  # uint8 activations: int8 activations measured 3.5x slower here
    weight_type: str = "int8"
    calibration_method: str = "minmax"  # minmax | entropy | percentile
    # OpenVINO (nncf_quantize): activation ranges and preset.
    range_estimator: str = "minmax"  # minmax | default (NNCF's own, which clipped outliers on ResNet-50)
    preset: str = "performance"  # performance | mixed


@dataclass
class PruneConfig:
    # Global unstructured magnitude pruning of Conv and Linear weights, before export.
    amount: float = 0.5


@dataclass
class Fp16Config:
    keep_io_types: bool = True  # inputs and outputs stay float32


@dataclass
class Tolerance:
    max_rel_l2: Optional[float] = None
    min_cosine: Optional[float] = None
    max_abs: Optional[float] = None
    min_top1_agreement: Optional[float] = None


@dataclass
class LatencyConfig:
    warmup_runs: int = 10
    min_runs: int = 200
    max_runs: int = 5000
    max_seconds: float = 30.0
    # Stop once the p50 of two consecutive measurement windows differ by less than this fraction.
    stable_within: float = 0.03


@dataclass
class VerifyConfig:
    samples: int = 8
    seed: int = 0
    tolerances: Dict[str, Tolerance] = field(default_factory=dict)
    latency: LatencyConfig = field(default_factory=LatencyConfig)


@dataclass
class CacheConfig:
    # null: $MDBUILD_CACHE_DIR, else the user cache directory (~/.cache/mdbuild).
    dir: Optional[str] = None
    enabled: bool = True


@dataclass
class OutputConfig:
    dir: str = "artifacts"


@dataclass
class LockConfig:
    # null: <recipe name>.lock.json beside a recipe in ./recipes, else ./recipes/<name>.lock.json.
    path: Optional[str] = None
    update: bool = True


@dataclass
class BuildConfig:
    mode: str = "build"
    traceback: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    # The recipe's optimization steps, in order: simplify, prune, fp16, ort_quantize, nncf_quantize.
    optimize: List[str] = field(default_factory=list)
    prune: PruneConfig = field(default_factory=PruneConfig)
    fp16: Fp16Config = field(default_factory=Fp16Config)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    # One image preprocessing for calibration, evaluation and the server's image route.
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    calibration: DataConfig = field(default_factory=DataConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    lock: LockConfig = field(default_factory=LockConfig)


MODES = ("build", "plan", "check")


def section_schema(path: str) -> type | None:
    """The dataclass typing a dotted config section ("" is the whole config), or None when the
    section is free-form (kwargs, dims, tolerances) or not declared."""
    node: type | None = BuildConfig
    for part in filter(None, path.split(".")):
        declared = {f.name: f for f in fields(node)} if node is not None else {}
        if part not in declared or not callable(declared[part].default_factory):
            return None
        default = declared[part].default_factory()
        node = type(default) if is_dataclass(default) else None
    return node


def declared_keys(path: str) -> list[str]:
    schema = section_schema(path)
    return [f.name for f in fields(schema)] if schema is not None else []
