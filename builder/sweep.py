"""Sweep summary: after `mdbuild -m ...`, one table of every job (target, precision, accuracy,
latency, throughput, size, result) and a plot of accuracy against latency, as JSON, Markdown, HTML and
SVG in the sweep directory. Each job leaves result.json in its own directory, a failed one too (with
its error); a Hydra callback gathers them when the sweep ends, whichever jobs failed."""

from __future__ import annotations

import html
import json
import math
import socket
import sys
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"


def job_result(recipe: str, target: dict[str, Any], artifact: Path | None, run_dir: Path, error: str | None,
               overrides: list[str] = ()) -> dict[str, Any]:
    """What one job of a sweep produced, from its report (or the failed report it kept)."""
    report_path = artifact / "report.json" if artifact else run_dir / "failed-verification" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    name = target.get("name")
    if report.get("selection") and name == "auto":  # a sweep's job of target=auto: what it chose
        name = f"auto: {report['selection']['chosen']}"
    outputs = report.get("outputs", {})
    evaluation = report.get("evaluation") or {}
    latency = report.get("latency", {})
    return {
        "recipe": recipe, "target": name, "backend": target.get("backend"),
        "precision": target.get("precision"), "computed": (report.get("compute") or {}).get("precision"),
        "passed": error is None,
        "score": evaluation.get("artifact_score"), "source_score": evaluation.get("source_score"),
        "metric": evaluation.get("metric"),
        "rel_l2": max((o["metrics"]["rel_l2"] for o in outputs.values()), default=None),
        "min_cosine": min((o["metrics"]["min_cosine"] for o in outputs.values()), default=None),
        "p50_ms": latency.get("p50_ms"), "p99_ms": latency.get("p99_ms"),
        "throughput_per_s": latency.get("throughput_per_s"), "latency_note": latency.get("why"),
        "model_bytes": report.get("size", {}).get("model_bytes"),
        "artifact": str(artifact) if artifact else None, "error": error, "worker": _worker(),
        "overrides": list(overrides),
    }


def _worker() -> dict[str, Any]:
    """Where the job ran: the host, and in a Ray task the resources Ray gave it (a GPU, CPUs)."""
    ray = sys.modules.get("ray")  # imported by a Ray worker; never imported here
    assigned = ray.get_runtime_context().get_assigned_resources() if ray is not None and ray.is_initialized() else {}
    return {"host": socket.gethostname(), "resources": assigned}


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))


def read_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's result, in job order."""
    paths = sorted(sweep_dir.glob(f"*/{RESULT_FILE}"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
    return [json.loads(path.read_text()) for path in paths]


def speed(row: dict[str, Any]) -> float | None:
    """The p50 a choice compares: target=auto's race where it ran (None for a contestant that failed it)."""
    if row.get("race_error"):
        return None
    return row.get("race_p50_ms") if row.get("race_p50_ms") is not None else row.get("p50_ms")


def recommend(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The artifact to ship: the fastest (p50) of the jobs that passed their gates."""
    passed = [row for row in rows if row["passed"] and speed(row) is not None]
    return min(passed, key=speed, default=None)


def label(rows: list[dict[str, Any]]) -> None:
    """Each row's `job`: its target, and the overrides that tell it apart from the sweep's other jobs of that
    target (a sweep of one target's options: `openvino_int8 (nncf_quantize.preset=mixed)`)."""
    settings = [dict(item.split("=", 1) for item in row.get("overrides") or () if "=" in item) for row in rows]
    for row, own in zip(rows, settings):
        peers = [other for r, other in zip(rows, settings) if r["target"] == row["target"]]
        differing = [f"{key.lstrip('+~')}={value}" for key, value in own.items()
                     if key.lstrip("+~") != "target" and any(other.get(key) != value for other in peers)]
        row["job"] = f"{row['target']} ({', '.join(differing)})" if differing else str(row["target"])


def write_summary(sweep_dir: Path, rows: list[dict[str, Any]], choice: tuple[dict[str, Any], str] | None = None) -> list[Path]:
    """The summary files; `choice`: the row to ship and why, where not the fastest (target=auto's kept choice)."""
    if not rows:
        return []
    label(rows)
    chosen, why = choice or (recommend(rows), None)
    for row in rows:
        row["recommended"] = row is chosen
        row["why"] = why if row is chosen else None
    written = [sweep_dir / "summary.json", sweep_dir / "summary.md", sweep_dir / "summary.html", sweep_dir / "summary.svg"]
    written[0].write_text(json.dumps(rows, indent=2))
    written[1].write_text(_markdown(rows))
    written[2].write_text(_html(rows))
    written[3].write_text(plot(rows))
    return written


def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The table's columns; the accuracy column only where a labelled set scored the jobs."""
    metric = _metric(rows)
    return [("job", "target"), ("precision", "precision"), ("computed", "computed in"),
            *([("score", f"accuracy ({metric})")] if metric else []),
            ("rel_l2", "rel L2"), ("min_cosine", "min cosine"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
            *([("race_p50_ms", "p50 ms, raced")] if any("race_p50_ms" in row for row in rows) else []),
            ("throughput_per_s", "items/s"), ("model_bytes", "size MB"), ("passed", "result")]


def _metric(rows: list[dict[str, Any]]) -> str | None:
    return next((row["metric"] for row in rows if row.get("metric") and row.get("score") is not None), None)


def _verdict(rows: list[dict[str, Any]]) -> str:
    chosen = next((row for row in rows if row.get("recommended")), None)
    passed = sum(1 for row in rows if row["passed"])
    if chosen is None:
        return f"Ship: none ({passed} of {len(rows)} jobs passed their gates, none with a measured latency)."
    if chosen.get("why"):
        return f"Ship: {chosen['job']} ({chosen['artifact']}): {chosen['why']}."
    return (f"Ship: {chosen['job']} ({chosen['artifact']}): the fastest p50 ({speed(chosen):.4g} ms) of the "
            f"{passed} of {len(rows)} jobs that passed their gates.")


def _legend(rows: list[dict[str, Any]]) -> str:
    metric = _metric(rows)
    compared = ("rel L2 (lower is closer) and min cosine (higher is closer) compare each artifact's outputs with "
                "the source model's on the verification inputs")
    raced = (" p50 ms, raced: target=auto measured the candidates that passed again, in turns and in one sitting; "
             "its choice and the plot compare these.") if any("race_p50_ms" in row for row in rows) else ""
    if metric:
        return f"Accuracy: {metric} on the labelled set, the source model's in brackets; {compared}.{raced}"
    return f"No labelled set, so no accuracy column: {compared}; the plot shows rel L2.{raced}"


def cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None and key in ("p50_ms", "p99_ms", "throughput_per_s") and row.get("latency_note"):
        return row["latency_note"]
    if key == "race_p50_ms" and row.get("race_error"):
        return row["race_error"]
    if key == "passed":
        return "passed" if value else "FAILED"
    if value is None:
        return "-"
    if key == "model_bytes":
        return f"{value / 1e6:.2f}"
    if key == "score":
        source = row.get("source_score")
        return f"{value:.2f}" + (f" (source {source:.2f})" if source is not None else "")
    if key == "rel_l2":
        return f"{value:.2e}"
    if key == "min_cosine":
        return f"{value:.6f}"  # fp16 is 0.99998x: four significant digits read as 1
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown(rows: list[dict[str, Any]]) -> str:
    columns = _columns(rows)
    lines = [f"# Sweep summary: {rows[0]['recipe']}", "", _legend(rows), "",
             "| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row, key).replace("|", "\\|") for key, _ in columns) + " |" for row in rows]
    lines += ["", _verdict(rows)]
    failed = [row for row in rows if row["error"]]
    if failed:
        lines += ["", "Failed jobs:", ""] + [f"- {row['job']}: {row['error']}" for row in failed]
    lines += ["", "![accuracy versus p50 latency](summary.svg)"]
    return "\n".join(lines) + "\n"


def _html(rows: list[dict[str, Any]]) -> str:
    columns = _columns(rows)
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns) + "<th>error</th>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(row, key))}</td>" for key, _ in columns)
                   + f"<td>{html.escape(row['error'] or '')}</td></tr>" for row in rows)
    title = f"Sweep summary: {html.escape(rows[0]['recipe'])}"
    return (f"<!doctype html><meta charset='utf-8'><title>{title}</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ccc;text-align:left}</style>"
            f"<h1>{title}</h1><p><b>{html.escape(_verdict(rows))}</b></p><p>{html.escape(_legend(rows))}</p>{plot(rows)}"
            f"<table><tr>{head}</tr>{body}</table>\n")


_WIDTH, _HEIGHT, _PAD, _RIGHT = 720, 380, 70, 150  # _RIGHT: room for the last dot's label


def plot(rows: list[dict[str, Any]]) -> str:
    """The labelled score (linear), else rel L2 to the source (log: fp32, fp16 and int8 lie decades
    apart), against p50 latency; one dot per job, red where it failed."""
    metric = _metric(rows)
    key = "score" if metric else "rel_l2"
    points = [(speed(row), row[key], row) for row in rows if speed(row) is not None and row.get(key) is not None]
    if not points:
        return ("<svg xmlns='http://www.w3.org/2000/svg' width='420' height='40'><text x='10' y='25'>"
                "No job produced latency and accuracy figures to plot.</text></svg>")
    log = key == "rel_l2"
    ys = [math.log10(max(y, 1e-12)) if log else y for _, y, _ in points]
    sources = sorted({row["source_score"] for row in rows if metric and row.get("source_score") is not None})
    x_ticks = _ticks(0.0, max(x for x, _, _ in points) * 1.05)
    if log:
        y_ticks = list(range(math.floor(min(ys)), math.ceil(max(ys)) + 1))
        y_ticks = y_ticks if len(y_ticks) > 1 else [y_ticks[0] - 1, y_ticks[0]]
    else:
        low, high = min(ys + sources), max(ys + sources)
        margin = (high - low) * 0.05
        y_ticks = _ticks(low - margin, high + margin)
    sx = _scale(x_ticks[0], x_ticks[-1], _PAD, _WIDTH - _RIGHT)
    sy = _scale(y_ticks[0], y_ticks[-1], _HEIGHT - _PAD, _PAD)
    label = (f"{metric} (labelled set)" if metric else "rel L2 to the source (log scale, lower is closer)")
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{_HEIGHT}' font-size='12'>",
             f"<line x1='{_PAD}' y1='{_HEIGHT - _PAD}' x2='{_WIDTH - _RIGHT}' y2='{_HEIGHT - _PAD}' stroke='black'/>",
             f"<line x1='{_PAD}' y1='{_PAD}' x2='{_PAD}' y2='{_HEIGHT - _PAD}' stroke='black'/>",
             f"<text x='{_WIDTH / 2}' y='{_HEIGHT - 20}' text-anchor='middle'>p50 latency (ms)</text>",
             f"<text x='16' y='{_HEIGHT / 2}' transform='rotate(-90 16 {_HEIGHT / 2})' text-anchor='middle'>"
             f"{html.escape(label)}</text>"]
    for tick in x_ticks:
        parts.append(f"<text class='x-tick' x='{sx(tick):.1f}' y='{_HEIGHT - _PAD + 16}' text-anchor='middle'>{tick:g}</text>")
    for tick in y_ticks:
        text = f"1e{tick}" if log else f"{tick:g}"
        parts.append(f"<line x1='{_PAD - 4}' y1='{sy(tick):.1f}' x2='{_WIDTH - _RIGHT}' y2='{sy(tick):.1f}' stroke='#ddd'/>"
                     f"<text class='y-tick' x='{_PAD - 8}' y='{sy(tick) + 4:.1f}' text-anchor='end'>{text}</text>")
    for source in sources:  # the source model's score: what an artifact can lose against
        parts.append(f"<line x1='{_PAD}' y1='{sy(source):.1f}' x2='{_WIDTH - _RIGHT}' y2='{sy(source):.1f}' "
                     f"stroke='#555' stroke-dasharray='4 3'/><text x='{_WIDTH - _RIGHT + 4}' y='{sy(source) + 4:.1f}'>"
                     f"source {source:g}</text>")
    for (x, _, row), y in zip(points, ys):
        colour = "#1a7f37" if row["passed"] else "#cf222e"
        parts.append(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='5' fill='{colour}'><title>{html.escape(row['job'])}"
                     f"</title></circle><text x='{sx(x) + 8:.1f}' y='{sy(y) - 6:.1f}'>{html.escape(row['job'])}</text>")
    return "".join(parts) + "</svg>"


def _scale(low: float, high: float, start: float, end: float):
    span = (high - low) or 1.0
    return lambda value: start + (value - low) / span * (end - start)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    span = high - low or abs(high) * 0.1 or 1.0
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(low / step), math.ceil(high / step)
    if first == last:
        last += 1
    return [round(i * step, 12) for i in range(first, last + 1)]
