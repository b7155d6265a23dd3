"""Model monitoring: the digits CNN (trained, real held-out data) served for real, scraped by a real
Prometheus loaded with the artifact's own alert rules. In-distribution rows (the training split, which
the reference never saw) keep drift low and no alert; shifted rows cross the threshold and the rules'
alerts go pending. The dashboard's queries run on that Prometheus too."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import yaml

from conftest import QUICK, Workspace, read_json

pytestmark = pytest.mark.onnxruntime


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring")
    return Workspace(root / "work", root / "cache").run("+recipe=digits", "target=onnxruntime_fp32", *QUICK).artifact


def _serve(artifact, *flags):
    proc = subprocess.Popen([sys.executable, "-I", str(artifact / "serve.py"), "--port", "0", *flags], cwd=artifact,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("serving digits on http://127.0.0.1:"), line
    return proc, line.split(" on ", 1)[1].split("/v2/")[0]


@pytest.fixture(scope="module")
def server(artifact):
    proc, base = _serve(artifact)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(artifact, server, prometheus_binary, tmp_path_factory):
    """Prometheus scraping the server every second, evaluating the artifact's alerts.yml every second."""
    folder = tmp_path_factory.mktemp("prometheus")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(artifact / "monitoring" / "alerts.yml")],
              "scrape_configs": [{"job_name": "digits", "static_configs": [{"targets": [server.split("//")[1]]}]}]}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = subprocess.Popen([str(prometheus_binary), f"--config.file={folder / 'prometheus.yml'}",
                             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v1"
    _until(lambda: _get(api + "/status/runtimeinfo"), "Prometheus to start")
    yield api
    proc.terminate()
    proc.wait(timeout=20)


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def _query(api, expr):
    answer = _get(f"{api}/query?query={urllib.parse.quote(expr)}")
    assert answer and answer["status"] == "success", (expr, answer)
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in answer["data"]["result"]}


def _until(condition, what, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"gave up waiting for {what}")


def _send(base, images):
    for start in range(0, len(images), 50):
        batch = images[start : start + 50]
        body = {"inputs": [{"name": "image", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}]}
        request = urllib.request.Request(base + "/v2/models/digits/infer", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200


def _alerts(api, seen_rows):
    """The alerts once Prometheus has scraped `seen_rows` rows and evaluated the rules after that."""
    _until(lambda: list(_query(api, "mdbuild_monitor_rows_total").values()) == [seen_rows], f"a scrape of {seen_rows} rows")
    time.sleep(2.5)  # two evaluation intervals: the rules have run on that scrape
    return {(a["labels"]["alertname"], a["labels"].get("tensor")): a["state"] for a in _get(api + "/alerts")["data"]["alerts"]}


def test_the_artifact_records_reference_statistics_and_ships_rules_and_a_dashboard(artifact):
    reference = read_json(artifact / "monitoring" / "reference.json")
    assert reference["rows"] == {"verification samples": 4, "evaluation set": 512}  # verify=quick: 4 samples
    image, logits = reference["inputs"]["image"], reference["outputs"]["logits"]
    assert image["rows"] == logits["rows"] == 516 and (image["low"], image["high"]) == (0.0, 1.0)
    assert abs(sum(image["shares"]) - 1) < 1e-9 and len(image["shares"]) == len(image["edges"]) + 1
    assert 0.9 < logits["confidence"] < 1 and logits["top_class_share"] < 0.2  # a trained 10-class model
    assert len(logits["class_shares"]) == 10 and min(logits["class_shares"]) > 0.05
    manifest = read_json(artifact / "manifest.json")
    assert {"monitoring/reference.json", "monitoring/alerts.yml", "monitoring/dashboard.json"} <= set(manifest["files"])
    rules = yaml.safe_load((artifact / "monitoring" / "alerts.yml").read_text())["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == ["MdbuildInputDrift", "MdbuildOutputDrift", "MdbuildClassDrift", "MdbuildInputsOutOfRange",
                                          "MdbuildNonFiniteOutputs", "MdbuildConfidenceCollapse", "MdbuildClassCollapse"]


def test_in_distribution_rows_stay_below_and_shifted_rows_fire_the_shipped_alerts(artifact, server, prometheus):
    from builder.examples.digits import splits

    images = splits()["train"][0]  # rows the reference (evaluation set and samples) never saw
    _send(server, images[:600])
    assert _alerts(prometheus, 600) == {}
    drift = _query(prometheus, "mdbuild_drift_psi")
    assert len(drift) == 3 and max(drift.values()) < 0.05, drift  # image, logits and its predicted classes  # threshold 0.2
    assert list(_query(prometheus, "mdbuild_monitor_window_rows").values()) == [600]
    assert list(_query(prometheus, "mdbuild_input_out_of_range_rows_total").values()) == [0]
    for rule in yaml.safe_load((artifact / "monitoring" / "alerts.yml").read_text())["groups"][0]["rules"]:
        assert _query(prometheus, rule["expr"]) == {}, rule["alert"]

    # The same digits, rescaled as a broken preprocessing would (x * 2 - 0.5): 1000 rows fill the window.
    _send(server, (images[:1000] * 2 - 0.5).astype(np.float32))
    alerts = _alerts(prometheus, 1600)
    assert alerts == {("MdbuildInputDrift", "image"): "pending", ("MdbuildInputsOutOfRange", "image"): "pending"}, alerts
    drift = {json.loads(labels)["kind"]: value for labels, value in _query(prometheus, "mdbuild_drift_psi").items()}
    assert drift["input"] > 0.2, drift
    assert list(_query(prometheus, "mdbuild_input_out_of_range_rows_total").values()) == [1000]


def test_every_dashboard_query_runs_on_prometheus(artifact, prometheus):
    dashboard = read_json(artifact / "monitoring" / "dashboard.json")
    queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(queries) == 9
    for title, expr in queries:
        answer = _query(prometheus, expr)
        if "mdbuild_drift_psi" in expr or "confidence" in expr or "top_class" in expr:
            assert answer, title


def test_monitoring_off_exports_no_model_metrics(artifact):
    proc, base = _serve(artifact, "--monitoring", "off")
    try:
        _send(base, np.zeros((2, 1, 8, 8), np.float32))
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            text = response.read().decode()
        assert "mdbuild_requests_total" in text and "mdbuild_drift_psi" not in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_window_the_flags_and_the_class_statistics():
    from builder.serving.monitor import Monitor, summarize

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(400, 4))
    reference = {"inputs": {"x": summarize([rng.uniform(0, 1, size=(400, 3))], [None], {})},
                 "outputs": {"y": summarize([scores], [None], {"classes": True})}}
    monitor = Monitor("m", reference, window=100)
    for _ in range(30):
        monitor.observe({"x": rng.uniform(0, 1, size=(5, 3))}, {"y": rng.normal(size=(5, 4))})
        assert monitor.settle(10)  # measured on the monitor's thread
    lines = dict(line.rsplit(" ", 1) for line in monitor.render() if not line.startswith("#"))
    assert lines['mdbuild_monitor_window_rows{model="m"}'] == "100.0"  # the last 100 of 150 rows
    assert lines['mdbuild_monitor_rows_total{model="m"}'] == "150.0"
    assert float(lines['mdbuild_drift_psi{model="m",kind="input",tensor="x"}']) < 0.2
    # Out of range (past the reference span by more than a tenth of it), non-finite outputs, one class only.
    collapsed = np.tile([[0.0, 0.0, 9.0, 0.0]], (100, 1))
    collapsed[:3, 0] = np.nan
    monitor.record({"x": np.full((100, 3), 1.5)}, {"y": collapsed})
    lines = dict(line.rsplit(" ", 1) for line in monitor.render() if not line.startswith("#"))
    assert lines['mdbuild_input_out_of_range_rows_total{model="m",tensor="x"}'] == "100.0"
    assert lines['mdbuild_output_nonfinite_rows_total{model="m",tensor="y"}'] == "3.0"
    assert lines['mdbuild_output_top_class_share{model="m",tensor="y",window="live"}'] == "1.0"
    assert float(lines['mdbuild_drift_psi{model="m",kind="input",tensor="x"}']) > 1
    assert float(lines['mdbuild_drift_psi{model="m",kind="class",tensor="y"}']) > 1


def _psi_of(reference, feeds, outputs=None):
    from builder.serving.monitor import Monitor

    monitor = Monitor("m", reference, window=10_000)
    for batch in feeds:
        monitor.record(batch, outputs or {})
    return {line.split('tensor="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in monitor.render()
            if line.startswith("mdbuild_drift_psi")}, monitor.render()


def test_wide_rows_are_sampled_alike_live_and_at_build_time():
    """Rows of 257+ values (a table of 400 features on different scales, an image): the live sample covers
    the whole row as the reference's does, so fresh rows of the same distribution read no drift."""
    from builder.serving.monitor import summarize

    rng = np.random.default_rng(1)
    scales = np.linspace(1, 50, 400)
    table = lambda rows: rng.uniform(0, 1, size=(rows, 400)) * scales  # noqa: E731
    image = lambda rows: rng.uniform(0, 1, size=(rows, 3, 48, 48)) + np.arange(3)[None, :, None, None]  # noqa: E731
    reference = {"inputs": {"table": summarize([table(200)], [None], {}), "image": summarize([image(200)], [None], {})},
                 "outputs": {}}
    drift, _ = _psi_of(reference, [{"table": table(10), "image": image(10)} for _ in range(100)])
    assert max(drift.values()) < 0.01, drift


def test_padding_is_not_drift_for_token_inputs():
    """A mask is summarized by each row's length and the ids it pads by their real positions: sentences sent
    one by one at build time and padded into batches of 8 live read alike; a mask's 0s are not out of range."""
    from builder.monitoring import _described_inputs
    from builder.serving.monitor import summarize

    rng = np.random.default_rng(2)
    specs = [{"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64", "low": 0, "high": 1000},
             {"name": "attention_mask", "shape": ["batch", "seq"], "dtype": "int64"}]
    described = _described_inputs(specs, {"input_ids": [0, 1000], "attention_mask": [0, 2]})
    assert described["attention_mask"] == {"statistic": "length", "padding": 0, "range": False}
    assert described["input_ids"] == {"range": False, "masked_by": "attention_mask", "padding": 0}

    def sentence(length):
        return {"input_ids": rng.integers(1, 1000, size=(1, length)), "attention_mask": np.ones((1, length), np.int64)}

    alone = [sentence(int(rng.integers(4, 33))) for _ in range(300)]
    reference = {"inputs": {name: summarize([s[name] for s in alone], [s["attention_mask"] for s in alone]
                                            if name == "input_ids" else [None] * len(alone), described[name])
                            for name in described}, "outputs": {}}
    batches = []
    for _ in range(100):
        lengths = rng.integers(4, 33, size=8)
        ids = np.zeros((8, lengths.max()), np.int64)
        mask = np.zeros_like(ids)
        for row, length in enumerate(lengths):
            ids[row, :length] = rng.integers(1, 1000, size=length)
            mask[row, :length] = 1
        batches.append({"input_ids": ids, "attention_mask": mask})
    drift, lines = _psi_of(reference, batches)
    assert max(drift.values()) < 0.05, drift
    assert all(line.endswith(" 0.0") for line in lines if line.startswith("mdbuild_input_out_of_range_rows_total"))
    # Longer sentences than the build saw: the length drifts.
    longer = [{"input_ids": rng.integers(1, 1000, size=(8, 64)), "attention_mask": np.ones((8, 64), np.int64)}
              for _ in range(50)]
    assert _psi_of(reference, longer)[0]["attention_mask"] > 1


def test_probability_outputs_are_read_as_probabilities():
    """A softmax output rounded as a quantized model rounds it (to 1/255) is still probabilities: its confidence
    is the top probability, not a softmax of it."""
    from builder.serving.monitor import summarize

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, size=(500, 10))
    probabilities = np.round(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True) * 255) / 255
    stats = summarize([probabilities], [None], {"classes": True})
    assert stats["probabilities"] and abs(stats["confidence"] - probabilities.max(axis=1).mean()) < 1e-9


def test_the_alert_rules_judge_each_replica_by_its_own_window(artifact, prometheus_binary, tmp_path):
    """promtool (the Prometheus release's own rule tester): a replica whose window holds 20 rows reads a noisy
    PSI of 0.9 while another's holds 600 rows; no drift alert; the full replica's own drift fires."""
    rules = artifact / "monitoring" / "alerts.yml"
    series = lambda labels, value: {"series": labels, "values": f"{value}x20"}  # noqa: E731
    psi = 'mdbuild_drift_psi{model="digits",kind="input",tensor="image",instance="%s",job="digits"}'
    rows = 'mdbuild_monitor_window_rows{model="digits",instance="%s",job="digits"}'
    case = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [series(psi % "a", 0.9), series(rows % "a", 20), series(psi % "b", 0.01), series(rows % "b", 600),
                         series(psi % "c", 0.5), series(rows % "c", 700)],
        "alert_rule_test": [{"eval_time": "15m", "alertname": "MdbuildInputDrift", "exp_alerts": [{
            "exp_labels": {"severity": "warning", "model": "digits", "kind": "input", "tensor": "image",
                           "instance": "c", "job": "digits"},
            "exp_annotations": {"summary": "digits: input image drifted from the build's reference (PSI 0.50)"}}]}]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(case))
    checked = subprocess.run([str(prometheus_binary.with_name("promtool")), "test", "rules", str(tmp_path / "test.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_tables_features_drift_one_by_one():
    """30 columns on their own scales (as breast_cancer's): tripling two of them hardly moves the pooled
    PSI of the tensor, but those two features' own PSIs cross the threshold and no other does."""
    from builder.monitoring import _described_inputs
    from builder.serving.monitor import summarize

    rng = np.random.default_rng(4)
    scales = np.geomspace(0.01, 1000, 30)
    table = lambda rows: rng.lognormal(0, 0.5, size=(rows, 30)) * scales  # noqa: E731
    how = _described_inputs([{"name": "x", "shape": ["batch", 30], "dtype": "float32"}], {})["x"]
    assert how == {"range": True, "features": True}
    reference = {"inputs": {"x": summarize([table(300)], [None], how)}, "outputs": {}}
    _, lines = _psi_of(reference, [{"x": table(10)} for _ in range(100)])
    quiet = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("mdbuild_feature_drift_psi")]
    assert len(quiet) == 30 and max(quiet) < 0.2, quiet
    shifted = []
    for _ in range(100):
        rows = table(10)
        rows[:, [4, 24]] *= 3
        shifted.append({"x": rows})
    drift, lines = _psi_of(reference, shifted)
    features = {line.split('feature="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in lines if line.startswith("mdbuild_feature_drift_psi")}
    assert {name for name, value in features.items() if value > 0.2} == {"4", "24"}, features
    assert drift["x"] < 0.2  # the pooled PSI alone would have missed it
    # Each column is held to its own range: a small column 1000x off is inside the table's overall range.
    broken = table(50)
    broken[:, 4] *= 1000
    _, lines = _psi_of(reference, [{"x": broken}])
    assert 'mdbuild_input_out_of_range_rows_total{model="m",tensor="x"} 50.0' in lines
    fresh = _psi_of(reference, [{"x": table(50)}])[1]
    flagged = [float(line.rsplit(" ", 1)[1]) for line in fresh if line.startswith("mdbuild_input_out_of_range_rows_total")]
    assert flagged[0] <= 2  # lognormal tails: a fresh row may pass a column's widened reference range now and then


def test_columns_and_tensors_without_a_finite_reference_value_are_summarized():
    """A table column missing (NaN) in every reference row, and a tensor of NaN only: the build summarizes
    them (one bin, no range) instead of failing, and the server measures them."""
    from builder.serving.monitor import summarize

    table = np.random.default_rng(5).normal(size=(200, 3))
    table[:, 1] = np.nan
    reference = {"inputs": {"x": summarize([table], [None], {"range": True, "features": True}),
                            "empty": summarize([np.full((200, 2), np.nan)], [None], {"range": True})}, "outputs": {}}
    assert reference["inputs"]["x"]["features"][1] == {"edges": [], "shares": [1.0]}
    assert reference["inputs"]["empty"]["range"] is False and "low" not in reference["inputs"]["empty"]
    drift, lines = _psi_of(reference, [{"x": table[:10], "empty": np.full((10, 2), np.nan)}])
    assert set(drift) == {"x", "empty"} and "mdbuild_monitor_failed_requests_total{model=\"m\"} 0.0" in lines
