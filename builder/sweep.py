"""Sweep summary: after `mdbuild -m ...`, one table of every job (target, precision, accuracy,
latency, throughput, size, passed) and an accuracy-versus-latency plot, as JSON, Markdown and HTML
in the sweep directory. Each job leaves result.json in its own directory; a Hydra callback gathers them."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"


def job_result(spec, artifact: Path | None, run_dir: Path, error: str | None) -> dict[str, Any]:
    """What one job of a sweep produced, from its report (or the failed report it kept)."""
    report_path = artifact / "report.json" if artifact else run_dir / "failed-verification" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    outputs = report.get("outputs", {})
    evaluation = report.get("evaluation") or {}
    latency = report.get("latency", {})
    return {
        "recipe": spec.recipe, "target": spec.target["name"], "backend": spec.target["backend"],
        "precision": spec.target["precision"], "computed": (report.get("compute") or {}).get("precision"),
        "passed": error is None,
        "score": evaluation.get("artifact_score"), "source_score": evaluation.get("source_score"),
        "metric": evaluation.get("metric"),
        "rel_l2": max((o["metrics"]["rel_l2"] for o in outputs.values()), default=None),
        "min_cosine": min((o["metrics"]["min_cosine"] for o in outputs.values()), default=None),
        "p50_ms": latency.get("p50_ms"), "p99_ms": latency.get("p99_ms"),
        "throughput_per_s": latency.get("throughput_per_s"), "latency_note": latency.get("why"),
        "model_bytes": report.get("size", {}).get("model_bytes"),
        "artifact": str(artifact) if artifact else None, "error": error,
    }


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))


def write_summary(sweep_dir: Path) -> list[Path]:
    rows = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{RESULT_FILE}"), key=lambda p: int(p.parent.name))]
    if not rows:
        return []
    written = [sweep_dir / "summary.json", sweep_dir / "summary.md", sweep_dir / "summary.html", sweep_dir / "summary.svg"]
    written[0].write_text(json.dumps(rows, indent=2))
    written[1].write_text(_markdown(rows))
    written[2].write_text(_html(rows))
    written[3].write_text(_plot(rows))
    return written


_COLUMNS = [("target", "target"), ("precision", "precision"), ("computed", "computed in"), ("score", "accuracy"), ("rel_l2", "rel L2"),
            ("min_cosine", "min cosine"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
            ("throughput_per_s", "items/s"), ("model_bytes", "size MB"), ("passed", "passed")]


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None and key in ("p50_ms", "p99_ms", "throughput_per_s") and row.get("latency_note"):
        return row["latency_note"]
    if value is None:
        return "-"
    if key == "model_bytes":
        return f"{value / 1e6:.2f}"
    if key == "score":
        return f"{value:.2f} (source {row['source_score']:.2f})"
    if key == "passed":
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown(rows: list[dict[str, Any]]) -> str:
    metric = next((r["metric"] for r in rows if r.get("metric")), None)
    lines = [f"# Sweep summary: {rows[0]['recipe']}", "",
             f"Accuracy: {metric} on the labelled set." if metric else "No labelled set: accuracy is the cosine to the source model.",
             "", "| " + " | ".join(title for _, title in _COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_cell(row, key) for key, _ in _COLUMNS) + " |" for row in rows]
    failed = [row for row in rows if row["error"]]
    lines += [""] + [f"- {row['target']}: {row['error']}" for row in failed]
    lines += ["", "![accuracy versus p50 latency](summary.svg)"]
    return "\n".join(lines) + "\n"


def _html(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in _COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(row, key))}</td>" for key, _ in _COLUMNS) + "</tr>"
                   for row in rows)
    return (f"<!doctype html><meta charset='utf-8'><title>Sweep summary: {html.escape(rows[0]['recipe'])}</title>"
            f"<style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;border-bottom:1px solid #ccc}}</style>"
            f"<h1>Sweep summary: {html.escape(rows[0]['recipe'])}</h1>{_plot(rows)}"
            f"<table><tr>{head}</tr>{body}</table>\n")


def _plot(rows: list[dict[str, Any]]) -> str:
    """Accuracy (labelled score, else cosine to the source) against p50 latency, one dot per target."""
    points = [(r["p50_ms"], r["score"] if r["score"] is not None else r["min_cosine"], r) for r in rows
              if r["p50_ms"] is not None and (r["score"] is not None or r["min_cosine"] is not None)]
    if not points:
        return "<svg xmlns='http://www.w3.org/2000/svg' width='400' height='40'><text x='10' y='25'>No job produced latency and accuracy figures to plot.</text></svg>"
    width, height, pad = 640, 360, 60
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = 0.0, max(xs) * 1.1
    y0, y1 = min(ys) - (max(ys) - min(ys) or abs(min(ys)) * 0.01 or 0.01) * 0.2, max(ys) + (max(ys) - min(ys) or 0.01) * 0.2
    sx = lambda x: pad + (x - x0) / (x1 - x0) * (width - 2 * pad)  # noqa: E731
    sy = lambda y: height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)  # noqa: E731
    label = "accuracy" if points[0][2]["score"] is not None else "min cosine to source"
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>",
             f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' stroke='black'/>",
             f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{height - pad}' stroke='black'/>",
             f"<text x='{width / 2}' y='{height - 15}' text-anchor='middle'>p50 latency (ms)</text>",
             f"<text x='15' y='{height / 2}' transform='rotate(-90 15 {height / 2})' text-anchor='middle'>{label}</text>",
             f"<text x='{pad}' y='{height - pad + 15}' text-anchor='middle'>{x0:.3g}</text>",
             f"<text x='{width - pad}' y='{height - pad + 15}' text-anchor='middle'>{x1:.3g}</text>",
             f"<text x='{pad - 5}' y='{height - pad}' text-anchor='end'>{y0:.4g}</text>",
             f"<text x='{pad - 5}' y='{pad}' text-anchor='end'>{y1:.4g}</text>"]
    for x, y, row in points:
        colour = "#1a7f37" if row["passed"] else "#cf222e"
        parts.append(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='5' fill='{colour}'/>"
                     f"<text x='{sx(x) + 8:.1f}' y='{sy(y) - 6:.1f}' font-size='12'>{html.escape(row['target'])}</text>")
    return "".join(parts) + "</svg>"
