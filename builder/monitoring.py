"""The build's side of model monitoring (serving/monitor.py is the server's): the reference statistics
of every input and output, on the verification samples and the evaluation set, and the Prometheus alert
rules and Grafana dashboard for the metrics the server exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from builder import samples
from builder.evaluation import EVALUATION_FILE
from builder.samples import role
from builder.serving.accuracy import read_cases, run_case
from builder.serving.monitor import summarize
from builder.steps.reference import REFERENCE_FILE
from builder.steps.verify import OUTPUTS_FILE, class_outputs

MONITORING_DIR = "monitoring"
EVALUATION_ROWS = 512  # of the evaluation set, evenly spread: enough for deciles, bounded build time
# Fewer reference rows than this: PSI against them is noise (two samples of one distribution differ by
# about 9/n over ten bins, and a thin reference's bins are themselves off), so no drift alert ships.
MIN_REFERENCE_ROWS = 100
# A table's columns are summarized one by one up to this many; their drift alert needs this many rows
# (a feature's PSI is compared across every column: a thin reference would let one of them cross by chance).
MAX_FEATURES = 64
MIN_FEATURE_ROWS = 150
_BATCH = 64
DRIFT_FOR = "10m"  # a drift alert fires once the window has stayed drifted this long


def reads(config: dict[str, Any]) -> list[str]:
    return ["model.outputs", "verify.class_scores"] if config["serving"]["monitoring"] else []


def write(out: Path, model, inputs: dict[str, Path], config: dict[str, Any], progress: Callable[[str], None]) -> dict:
    """monitoring/: reference.json, alerts.yml and dashboard.json; returns the reference statistics."""
    names = config["model"]["outputs"]
    tensors: dict[str, dict[str, list[np.ndarray]]] = {"inputs": {}, "outputs": {}}
    described_reference = json.loads((inputs["reference"] / "reference.json").read_text())
    kinds = [case["kind"] for case in described_reference["cases"]]
    with np.load(inputs["reference"] / REFERENCE_FILE) as reference, np.load(inputs["report"] / OUTPUTS_FILE) as answers:
        cases = [case for case, kind in zip(read_cases(reference), kinds) if kind == "sample"]
        answered = [case["artifact"] for case, kind in zip(read_cases(answers), kinds) if kind == "sample"]
    for case, outputs in zip(cases, answered):
        _extend(tensors, case["input"], outputs)
    rows = {"verification samples": len(cases), "evaluation set": 0}
    if (inputs["reference"] / EVALUATION_FILE).is_file():
        found, _ = samples.load(inputs["reference"] / EVALUATION_FILE)
        chosen = [found[int(i)] for i in np.linspace(0, len(found) - 1, min(EVALUATION_ROWS, len(found)))]
        for feeds in _batches(chosen):
            progress(f"monitoring reference: evaluation rows {rows['evaluation set']}/{len(chosen)}")
            _extend(tensors, feeds, run_case(model, feeds, names))
            rows["evaluation set"] += len(next(iter(feeds.values())))
    # Class scores: (batch, classes) outputs, of those verify.class_scores names where it does.
    classes = {name for name in class_outputs(config["verify"]["class_scores"], cases)
               if all(array.ndim == 2 and array.shape[1] > 1 for array in tensors["outputs"][name])}
    described = _described_inputs(config["model"]["inputs"], config["requests"]["ranges"])
    random = described_reference.get("random") and not rows["evaluation set"]
    total = sum(rows.values())
    # Why the rules leave out the drift, collapse and range alerts (None: they do not).
    thin = ("the reference is the build's random verification inputs" if random else
            f"the reference has {total} rows, under {MIN_REFERENCE_ROWS}" if total < MIN_REFERENCE_ROWS else None)

    def masks(name):  # the batches of the mask padding this input, one per batch of it
        mask = described[name].get("masked_by")
        return tensors["inputs"][mask] if mask else [None] * len(tensors["inputs"][name])

    statistics = {
        "rows": rows, "without_drift_alerts": thin, "drift_min_rows": config["serving"]["drift_min_rows"],
        "inputs": {name: summarize(arrays, masks(name), described[name]) for name, arrays in tensors["inputs"].items()},
        "outputs": {name: summarize(arrays, [None] * len(arrays), {"classes": True} if name in classes else {})
                    for name, arrays in tensors["outputs"].items()},
    }
    folder = out / MONITORING_DIR
    folder.mkdir()
    (folder / "reference.json").write_text(json.dumps(statistics, indent=1, sort_keys=True))
    recipe, serving = config["recipe"], config["serving"]
    (folder / "alerts.yml").write_text(alert_rules(recipe, serving, statistics))
    (folder / "dashboard.json").write_text(json.dumps(dashboard(recipe, serving, statistics), indent=1))
    return statistics


def _described_inputs(specs: list[dict[str, Any]], declared: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """How each input is summarized: a mask by each row's length; an input of a mask's shape by its real
    positions; a range check where no range is declared (a declared one is refused at the door)."""
    masks = [spec for spec in specs if role(spec) == "mask"]
    described = {}
    for spec in specs:
        if role(spec) == "mask":
            described[spec["name"]] = {"statistic": "length", "padding": spec.get("pad", 0), "range": False}
            continue
        how = {"range": spec["name"] not in declared}
        padded_by = next((mask for mask in masks if list(mask["shape"]) == list(spec["shape"])), None)
        if padded_by is not None:
            how.update(masked_by=padded_by["name"], padding=padded_by.get("pad", 0))
        elif len(spec["shape"]) == 2 and isinstance(spec["shape"][1], int) and 2 <= spec["shape"][1] <= MAX_FEATURES:
            how["features"] = True  # a table (batch, features): each column too
        described[spec["name"]] = how
    return described


def _extend(tensors, feeds, outputs) -> None:
    for kind, arrays in (("inputs", feeds), ("outputs", outputs)):
        for name, array in arrays.items():
            tensors[kind].setdefault(name, []).append(np.asarray(array))


def _batches(found: list[dict[str, np.ndarray]]):
    """Batches of samples of one shape each (no padding: padded positions are not what a client sends)."""
    groups: dict[tuple, list] = {}
    for sample in found:
        groups.setdefault(tuple((name, value.shape) for name, value in sorted(sample.items())), []).append(sample)
    for group in groups.values():
        for start in range(0, len(group), _BATCH):
            chunk = group[start : start + _BATCH]
            yield {name: np.stack([sample[name] for sample in chunk]) for name in chunk[0]}


def _expressions(recipe: str, serving: dict[str, Any], class_drift: list[str]) -> dict[str, str]:
    """The PromQL of each alert. Every series is matched within its own scrape target (instance, job):
    one replica's full window never vouches for another's. `class_drift`: the class outputs whose
    reference has enough rows per class to compare their predicted classes' frequencies."""
    model = f'model="{recipe}"'
    enough = f'ignoring(kind, tensor, window, feature) mdbuild_monitor_window_rows{{{model}}} >= {serving["drift_min_rows"]}'
    threshold = serving["drift_threshold"]
    return {
        "MdbuildInputDrift": f'mdbuild_drift_psi{{{model},kind="input"}} > {threshold} and {enough}',
        "MdbuildOutputDrift": f'mdbuild_drift_psi{{{model},kind="output"}} > {threshold} and {enough}',
        "MdbuildFeatureDrift": f'mdbuild_feature_drift_psi{{{model}}} > {threshold} and {enough}',
        "MdbuildClassDrift": ("(" + " or ".join(f'mdbuild_drift_psi{{{model},kind="class",tensor={json.dumps(name)}}}'
                                                for name in class_drift) + f") > {threshold} and {enough}"),
        "MdbuildInputsOutOfRange": (f"rate(mdbuild_input_out_of_range_rows_total{{{model}}}[5m]) / ignoring(tensor) "
                                    f"group_left rate(mdbuild_monitor_rows_total{{{model}}}[5m]) > 0.01"),
        "MdbuildNonFiniteOutputs": f"increase(mdbuild_output_nonfinite_rows_total{{{model}}}[5m]) > 0",
        # Halfway from the reference's confidence down to chance (1 / classes): reachable for two classes too.
        "MdbuildConfidenceCollapse": (f'mdbuild_output_confidence_mean{{{model},window="live"}} < ignoring(window) '
                                      f'(0.5 * mdbuild_output_confidence_mean{{{model},window="reference"}} + ignoring(window) '
                                      f'0.5 / mdbuild_output_classes{{{model}}}) and {enough}'),
        # Halfway from the reference's most frequent class's share up to every row.
        "MdbuildClassCollapse": (f'mdbuild_output_top_class_share{{{model},window="live"}} > ignoring(window) '
                                 f'(0.5 + 0.5 * mdbuild_output_top_class_share{{{model},window="reference"}}) and {enough}'),
    }


_ALERTS = {  # name -> (for, severity, summary)
    "MdbuildInputDrift": (DRIFT_FOR, "warning", "input {{ $labels.tensor }} drifted from the build's reference (PSI {{ $value | printf \"%.2f\" }})"),
    "MdbuildOutputDrift": (DRIFT_FOR, "warning", "output {{ $labels.tensor }} drifted from the build's reference (PSI {{ $value | printf \"%.2f\" }})"),
    "MdbuildFeatureDrift": (DRIFT_FOR, "warning", "feature {{ $labels.feature }} of input {{ $labels.tensor }} drifted from the build's reference (PSI {{ $value | printf \"%.2f\" }})"),
    "MdbuildClassDrift": (DRIFT_FOR, "warning", "the classes {{ $labels.tensor }} predicts drifted from the build's (PSI {{ $value | printf \"%.2f\" }})"),
    "MdbuildInputsOutOfRange": ("10m", "warning", "{{ $value | humanizePercentage }} of rows have {{ $labels.tensor }} outside the range the build saw"),
    "MdbuildNonFiniteOutputs": ("0m", "critical", "output {{ $labels.tensor }} answered NaN or Inf values"),
    "MdbuildConfidenceCollapse": (DRIFT_FOR, "warning", "{{ $labels.tensor }}: mean top-1 confidence fell halfway from the build's to chance"),
    "MdbuildClassCollapse": (DRIFT_FOR, "warning", "{{ $labels.tensor }}: one class answers {{ $value | humanizePercentage }} of rows, far more than at build time"),
}
_CLASS_ALERTS = ("MdbuildConfidenceCollapse", "MdbuildClassCollapse")
_DRIFT_ALERTS = ("MdbuildInputDrift", "MdbuildOutputDrift", "MdbuildFeatureDrift", "MdbuildClassDrift")
# The predicted classes' frequencies are compared once the reference has this many rows per class (fewer:
# a class the reference never predicted is noise, not drift).
ROWS_PER_CLASS = 10


def alert_rules(recipe: str, serving: dict[str, Any], statistics: dict[str, Any]) -> str:
    """Prometheus rules: the drift, range and non-finite alerts; those of class outputs where there are.
    The file's header says why any rule is left out, and what would bring it in."""
    import yaml

    classes = {name: stats for name, stats in statistics["outputs"].items() if "class_shares" in stats}
    class_drift = sorted(name for name, stats in classes.items() if stats["rows"] >= ROWS_PER_CLASS * len(stats["class_shares"]))
    tables = [stats for stats in statistics["inputs"].values() if "features" in stats]
    left_out = {}  # alert -> why
    if not classes:
        left_out.update(dict.fromkeys((*_CLASS_ALERTS, "MdbuildClassDrift"), "the model has no class-score output"))
    elif not class_drift:
        left_out["MdbuildClassDrift"] = f"the reference has under {ROWS_PER_CLASS} rows per class"
    if not tables:
        left_out["MdbuildFeatureDrift"] = "no input is a table"
    elif not any(stats["rows"] >= MIN_FEATURE_ROWS for stats in tables):
        left_out["MdbuildFeatureDrift"] = f"the reference has under {MIN_FEATURE_ROWS} rows (each column's PSI would be noise)"
    if not any(stats.get("range", True) for stats in statistics["inputs"].values()):
        left_out["MdbuildInputsOutOfRange"] = "every input's range is declared, and refused at the door, or unknown"
    if statistics["without_drift_alerts"]:  # against noise, drift and range say nothing about real traffic
        left_out.update(dict.fromkeys((*_DRIFT_ALERTS, *_CLASS_ALERTS, "MdbuildInputsOutOfRange"),
                                      f"{statistics['without_drift_alerts']} (it would compare traffic with noise)"))
    rules = [{"alert": name, "expr": expr, "for": _ALERTS[name][0],
              "labels": {"severity": _ALERTS[name][1]}, "annotations": {"summary": f"{recipe}: {_ALERTS[name][2]}"}}
             for name, expr in _expressions(recipe, serving, class_drift).items() if name not in left_out]
    header = (f"# Prometheus alert rules for {recipe}, generated by mdbuild: load with rule_files.\n"
              f"# Drift: PSI over the last {serving['drift_window']} rows (the server's --drift-window) above "
              f"{serving['drift_threshold']} once {serving['drift_min_rows']} rows are in the window.\n")
    header += "".join(f"# Left out: {name}: {why}.\n" for name, why in left_out.items())
    if statistics["without_drift_alerts"] or (tables and "MdbuildFeatureDrift" in left_out):
        header += (f"# For the drift alerts, give the build at least {MIN_REFERENCE_ROWS} rows of real data ({MIN_FEATURE_ROWS} for "
                   f"each column of a table): evaluation data (up to {EVALUATION_ROWS} rows are used) or more "
                   "verification samples.\n")
    return header + yaml.safe_dump({"groups": [{"name": f"mdbuild-{recipe}", "rules": rules}]}, sort_keys=False, width=100_000)


def dashboard(recipe: str, serving: dict[str, Any], statistics: dict[str, Any]) -> dict[str, Any]:
    """A Grafana dashboard (import it; it asks for the Prometheus data source)."""
    model = f'model="{recipe}"'
    classes = any("class_shares" in stats for stats in statistics["outputs"].values())
    panels = [
        ("Drift (PSI) per tensor", f"mdbuild_drift_psi{{{model}}}", "{{kind}} {{tensor}}", serving["drift_threshold"]),
        ("Rows in the drift window", f"mdbuild_monitor_window_rows{{{model}}}", "rows", serving["drift_min_rows"]),
        ("Out-of-range input rows / s", f"rate(mdbuild_input_out_of_range_rows_total{{{model}}}[5m])", "{{tensor}}", None),
        ("Non-finite output rows / s", f"rate(mdbuild_output_nonfinite_rows_total{{{model}}}[5m])", "{{tensor}}", None),
        ("Requests / s by route and code", f"sum by (route, code) (rate(mdbuild_requests_total{{{model}}}[5m]))",
         "{{route}} {{code}}", None),
        ("Request latency p50 / p99 (s), every route", f"histogram_quantile(0.5, sum by (le) "
         f"(rate(mdbuild_request_duration_seconds_bucket{{{model}}}[5m])))",
         "p50", None),
    ]
    if any("features" in stats for stats in statistics["inputs"].values()):
        panels.append(("Drift (PSI) per feature of a table", f"mdbuild_feature_drift_psi{{{model}}}",
                       "{{tensor}}[{{feature}}]", serving["drift_threshold"]))
    if classes:
        panels += [("Mean top-1 confidence", f"mdbuild_output_confidence_mean{{{model}}}", "{{tensor}} {{window}}", None),
                   ("Share of the most frequent class", f"mdbuild_output_top_class_share{{{model}}}", "{{tensor}} {{window}}", None)]
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus"}],
        "title": f"mdbuild · {recipe}", "uid": f"mdbuild-{recipe}"[:40], "schemaVersion": 39, "editable": True,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "tags": ["mdbuild"],
        "panels": [_panel(index, *panel) for index, panel in enumerate(panels)],
    }


def _panel(index: int, title: str, expr: str, legend: str, threshold: float | None) -> dict[str, Any]:
    steps = [{"color": "green", "value": None}] + ([{"color": "red", "value": threshold}] if threshold is not None else [])
    targets = [{"refId": "A", "expr": expr, "legendFormat": legend}]
    if title.startswith("Request latency"):
        targets.append({"refId": "B", "expr": expr.replace("0.5,", "0.99,", 1), "legendFormat": "p99"})
    return {"id": index + 1, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
            "gridPos": {"x": 12 * (index % 2), "y": 8 * (index // 2), "w": 12, "h": 8},
            "fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": steps},
                                         "custom": {"thresholdsStyle": {"mode": "line" if threshold is not None else "off"}}},
                            "overrides": []},
            "targets": targets}
