"""The sweep summary's table and plot, from job results (no build): values near 1 stay readable, every
column agrees with the page's legend, failed jobs are shown with their error."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from builder.sweep import label, write_summary

SVG = "{http://www.w3.org/2000/svg}"


def _row(target, precision, rel_l2, cosine, p50, error=None, score=None):
    return {"recipe": "r", "target": target, "backend": "b", "precision": precision, "computed": precision,
            "passed": error is None, "score": score, "source_score": 97.0 if score is not None else None,
            "metric": "top1" if score is not None else None, "rel_l2": rel_l2, "min_cosine": cosine,
            "p50_ms": p50, "p99_ms": p50 and p50 * 1.5, "throughput_per_s": p50 and 1000 / p50, "latency_note": None,
            "model_bytes": 4e6, "artifact": None if error else "a", "error": error}


def _dots(svg: str) -> dict[str, float]:
    root = ET.fromstring(svg)
    return {circle.find(f"{SVG}title").text: float(circle.get("cy")) for circle in root.iter(f"{SVG}circle")}


def _ticks(svg: str, axis: str) -> list[str]:
    return [text.text for text in ET.fromstring(svg).iter(f"{SVG}text") if text.get("class") == f"{axis}-tick"]


def test_without_labels_the_plot_shows_rel_l2_on_a_log_axis_and_cosines_keep_their_digits(tmp_path):
    rows = [_row("onnxruntime_fp32", "fp32", 2e-7, 0.99999999, 1.9), _row("openvino_fp16", "fp16", 3e-4, 0.999986, 1.2),
            _row("openvino_int8", "int8", 2e-2, 0.9991, 0.8), _row("tensorrt_fp16", "fp16", None, None, None, error="no GPU")]
    write_summary(tmp_path, rows)
    svg = (tmp_path / "summary.svg").read_text()
    dots = _dots(svg)
    assert set(dots) == {"onnxruntime_fp32", "openvino_fp16", "openvino_int8"}  # the failed job has no figures
    # SVG y grows downwards: the larger the error, the higher the dot; decades apart, not squeezed at one end.
    assert dots["openvino_int8"] < dots["openvino_fp16"] < dots["onnxruntime_fp32"]
    assert dots["onnxruntime_fp32"] - dots["openvino_int8"] > 150
    y_ticks = _ticks(svg, "y")
    assert len(y_ticks) == len(set(y_ticks)) >= 3 and "1e-7" in y_ticks and "1e-2" in y_ticks
    assert len(set(_ticks(svg, "x"))) >= 3
    assert "rel L2 to the source (log scale, lower is closer)" in svg
    markdown = (tmp_path / "summary.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| target"))
    assert "accuracy" not in header and "| rel L2 | min cosine |" in header
    assert "no accuracy column" in markdown and "min cosine (higher is closer)" in markdown
    assert "| 0.999986 |" in markdown and "| 3.00e-04 |" in markdown  # not "1" for every target
    assert "| FAILED |" in markdown and "- tensorrt_fp16: no GPU" in markdown
    # The artifact to ship: the fastest of those that passed.
    assert "Ship: openvino_int8 (a): the fastest p50 (0.8 ms) of the 3 of 4 jobs that passed their gates." in markdown
    assert [row["recommended"] for row in json.loads((tmp_path / "summary.json").read_text())] == [False, False, True, False]


def test_with_a_labelled_set_the_plot_and_the_accuracy_column_show_its_metric(tmp_path):
    rows = [_row("onnxruntime_fp32", "fp32", 1e-7, 1.0, 2.0, score=97.0),
            _row("onnxruntime_int8", "int8", 3e-2, 0.999, 1.0, score=96.4)]
    write_summary(tmp_path, rows)
    svg = (tmp_path / "summary.svg").read_text()
    dots = _dots(svg)
    assert dots["onnxruntime_fp32"] < dots["onnxruntime_int8"]  # the higher score is higher on the page
    y_ticks = _ticks(svg, "y")
    assert len(y_ticks) == len(set(y_ticks)) >= 3 and "top1 (labelled set)" in svg
    markdown = (tmp_path / "summary.md").read_text()
    assert "| accuracy (top1) |" in markdown and "| 96.40 (source 97.00) |" in markdown
    assert "Accuracy: top1 on the labelled set" in markdown


def test_rows_of_one_target_are_labelled_by_the_overrides_that_differ():
    rows = [{**_row("openvino_int8", "int8", 1e-2, 0.99, 3.0), "overrides": ["+recipe=r", "target=openvino_int8", f"nncf_quantize.preset={p}"]}
            for p in ("mixed", "performance")]
    rows.append({**_row("onnxruntime_fp32", "fp32", 1e-7, 1.0, 5.0), "overrides": ["+recipe=r", "target=onnxruntime_fp32"]})
    label(rows)
    assert [row["job"] for row in rows] == ["openvino_int8 (nncf_quantize.preset=mixed)",
                                            "openvino_int8 (nncf_quantize.preset=performance)", "onnxruntime_fp32"]
