"""Typed configuration: the dataclasses Hydra validates every recipe and override against.

YAML files under conf/ and recipes/ only set values; a key that is not declared here is a typo and
fails composition with the key's full name.
"""

from __future__ import annotations

from dataclasses import MISSING as MISSING_FIELD, dataclass, field, fields, is_dataclass, make_dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from backends import all_backends
from builder.errors import MdbuildError
from builder.optimize import GENERIC

DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
ROLES = ("auto", "mask", "ids", "values")


@dataclass
class InputSpec:
    name: str = MISSING
    # Each entry is a size or the name of a dynamic dimension (e.g. "batch"); see model.dims.
    shape: List[Any] = MISSING
    dtype: str = "float32"
    # Range [low, high) of integer values (token ids, indices): seeded inputs are drawn from it (default
    # [0, 100), or [0, 2) for a mask), and the server refuses values outside it where it is declared.
    low: Optional[int] = None
    high: Optional[int] = None
    # mask | ids | values, or auto: floats are values; an integer input named like a mask with values 0/1 a mask.
    role: str = "auto"
    # The value padding takes when samples of different lengths are batched (a mask's padding, [PAD]).
    pad: int = 0


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
    optimize: List[str] = field(default_factory=list)
    # The backend's own options: their schema is its `Options` (backends/<name>/__init__.py), chosen in
    # the target's defaults list (`- options: <backend>`).
    options: Any = None


@dataclass
class HardwareConfig:
    # 0 lets the runtime choose (one thread per physical core).
    intra_op_threads: int = 0
    inter_op_threads: int = 1


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
    # A TorchServe archive in the artifact: null, the target's default (pytorch: yes; onnxruntime: no).
    torchserve: Optional[bool] = None
    # Model monitoring: reference statistics in the artifact, drift metrics on /metrics, alert rules.
    monitoring: bool = True
    drift_window: int = 1000  # rows the live statistics cover (serve.py --drift-window overrides)
    drift_min_rows: int = 500  # rows in the window before a drift alert may fire (fewer: PSI is noise)
    drift_threshold: float = 0.2  # PSI above which a tensor has drifted


@dataclass
class Tolerance:
    max_rel_l2: Optional[float] = None
    min_cosine: Optional[float] = None
    max_abs: Optional[float] = None
    min_top1_agreement: Optional[float] = None
    # How far the artifact's gain along the source model's change under a perturbed input may stray
    # from 1 (|1 - gain|; an input the artifact ignores has gain 0), before a noise allowance (README).
    max_sensitivity_error: Optional[float] = None


@dataclass
class LatencyConfig:
    warmup_runs: int = 10
    min_runs: int = 200
    max_runs: int = 5000
    max_seconds: float = 30.0
    # Stop once the p50 of two consecutive measurement windows differ by less than this fraction.
    stable_within: float = 0.03


@dataclass
class VerifyConfig(DataConfig):
    """The verification data: auto takes the evaluation set, else the calibration set; npz, images and
    factory name data of its own; random (seeded inputs) is an explicit opt-in."""

    source: Optional[str] = "auto"
    samples: Optional[int] = 8
    seed: int = 0
    # Sizes verified of each dynamic dimension, {dim: [sizes]}; default: batch 1, 3 and model.dims;
    # a sequence short, middle and longest; other dimensions their model.dims size.
    sizes: Dict[str, List[int]] = field(default_factory=dict)
    tolerances: Dict[str, Tolerance] = field(default_factory=dict)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    # Outputs of the source model that may be (near) zero or the same for every verification input, and
    # inputs that may leave every output unchanged (otherwise the gate fails: comparing proves nothing).
    allow_uninformative: List[str] = field(default_factory=list)
    # Outputs that are class scores (top-1 agreement is reported for them); null: every (batch, classes) output.
    class_scores: Optional[List[str]] = None


@dataclass
class QuantizationConfig:
    """What every int8 step (ort_quantize, nncf_quantize, trt_quantize) keeps in float."""

    # Node names, operator types (e.g. Softmax) or glob patterns of node names, in the quantized graph's names.
    exclude: List[str] = field(default_factory=list)
    # Nodes reading an attention mask (model.inputs role mask) or a tensor computed from one stay in float.
    keep_masks_float: bool = True
    # Return the most harmful nodes to float until the int8 limits (verify.tolerances.int8) hold on the
    # calibration set (ort_quantize in static mode and trt_quantize: a ranked search; nncf_quantize: NNCF's
    # quantize_with_accuracy_control).
    accuracy_control: bool = False


@dataclass
class CacheConfig:
    # null: $MDBUILD_CACHE_DIR, else the user cache directory (~/.cache/mdbuild).
    dir: Optional[str] = None
    enabled: bool = True
    # A tier shared between machines (s3://bucket/prefix, gs://..., file:///...); null: $MDBUILD_CACHE_REMOTE, else none.
    remote: Optional[str] = None
    remote_options: Dict[str, Any] = field(default_factory=dict)  # fsspec storage options (endpoint_url, ...)
    push: bool = True  # upload what this build computed to the remote tier


@dataclass
class OutputConfig:
    dir: str = "artifacts"


@dataclass
class LockConfig:
    # null: <recipe name>.lock.json beside a recipe in ./recipes, else ./recipes/<name>.lock.json.
    path: Optional[str] = None
    update: bool = True


@dataclass
class SelectConfig:
    """target=auto (README, "Picking the winner")."""

    # The candidate targets; empty: every target usable on this host. Those not usable here are skipped.
    targets: List[str] = field(default_factory=list)
    # The lock's earlier choice stays while it passes and its p50 is within this fraction of the fastest's
    # (latency is noisy: a rebuild should not flip between two targets that run alike).
    margin: float = 0.05


@dataclass
class _BuildConfig:
    mode: str = "build"
    traceback: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    # The recipe's optimization steps, in order (builder/optimize and each backend's own); each step's
    # options are the section named after it (added below).
    optimize: List[str] = field(default_factory=list)
    # One image preprocessing for calibration, evaluation and the server's image route.
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    calibration: DataConfig = field(default_factory=DataConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    lock: LockConfig = field(default_factory=LockConfig)
    select: SelectConfig = field(default_factory=SelectConfig)


def _step_sections() -> list[tuple[str, type, Any]]:
    steps = [*GENERIC.values(), *(step for backend in all_backends() for step in backend.optimizations)]
    return [(step.name, step.options, field(default_factory=step.options)) for step in steps if step.options]


# The whole config: the sections above, and one per optimization step with options (prune.amount,
# ort_quantize.mode, ...), whose schema lives beside the step.
BuildConfig = make_dataclass("BuildConfig", _step_sections(), bases=(_BuildConfig,))

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


def backend_options(target: dict[str, Any]) -> None:
    """target.options against its backend's schema: defaults for what a target file leaves out (one
    without `- options: <backend>` in its defaults), one line for a key the backend does not have."""
    backend = next((b for b in all_backends() if b.name == target["backend"]), None)
    if backend is None:
        return  # not a backend that builds: planning says why
    schema = {f.name: f for f in fields(backend.options)}
    given = target["options"] or {}
    if not isinstance(given, dict):
        raise MdbuildError(f"{given!r} is not a section of options", "target.options",
                           f"give key: value pairs of the {backend.name} options, or `- options: {backend.name}` "
                           "in the target's defaults")
    for key in given:
        if key not in schema:
            valid = ", ".join(schema) or "none"
            raise MdbuildError("no such key", f"target.options.{key}",
                               f"valid keys of target.options for {backend.name}: {valid}")
    defaults = {name: f.default_factory() if f.default_factory is not MISSING_FIELD else f.default
                for name, f in schema.items()}
    for name, value in {**defaults, **given}.items():
        if value is MISSING_FIELD:
            raise MdbuildError("required and not set", f"target.options.{name}", f"set target.options.{name}")
    target["options"] = {**defaults, **given}
