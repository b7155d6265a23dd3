"""What model monitoring costs on the request path: the monitor's own work per request in process (handing
the request over, on the request path; measuring it, on the monitor's thread), and
the server's time per request (statistics extension) with `--monitoring on` and `off`, two servers of
one artifact answering interleaved blocks of requests at concurrency 1 (binary tensors).

    python benchmarks/monitoring_cost.py --recipe digits --recipe resnet50
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import artifacts, interleaved, load_artifact, mdbuild, print_host
from serving_load import binary_body, server_stats, start


def monitor_us(artifact: Path, rounds: int, per_round: int = 50) -> dict[str, float]:
    """Median microseconds per request, on the artifact's first verification case, of Monitor.observe (on
    the request path: each call waits for the monitor thread to finish the one before, untimed, so it
    is the hand-over that is timed, never the full queue) and Monitor.record (the measuring itself)."""
    from builder.serving.monitor import Monitor

    model, feeds, manifest = load_artifact(artifact)
    outputs = model.run(feeds)
    reference = json.loads((artifact / "monitoring" / "reference.json").read_text())
    monitor = Monitor(manifest["recipe"], reference, 1000)
    timings: dict[str, list[float]] = {"observe": [], "record": []}
    for _ in range(rounds):
        for _ in range(per_round):
            began = time.perf_counter()
            monitor.observe(feeds, outputs)
            timings["observe"].append(time.perf_counter() - began)
            monitor.settle(10.0)
        for _ in range(per_round):
            began = time.perf_counter()
            monitor.record(feeds, outputs)
            timings["record"].append(time.perf_counter() - began)
    return {name: statistics.median(values) * 1e6 for name, values in timings.items()}


def served_us(artifact: Path, rounds: int, per_round: int) -> dict[str, tuple[float, float]]:
    """{on | off: (server µs per request, client p50 ms)}, measured in interleaved blocks."""
    _, feeds, manifest = load_artifact(artifact)
    body, headers = binary_body(feeds)
    name = manifest["recipe"]
    servers = {mode: start(artifact, "--monitoring", mode) for mode in ("on", "off")}
    connections = {mode: http.client.HTTPConnection("127.0.0.1", port, timeout=60) for mode, (_, port) in servers.items()}

    def request(mode):
        connection = connections[mode]
        connection.request("POST", f"/v2/models/{name}/infer", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status

    try:
        before = {mode: server_stats(port, name) for mode, (_, port) in servers.items()}
        samples = interleaved({mode: (lambda mode=mode: request(mode)) for mode in servers}, rounds, per_round)
        after = {mode: server_stats(port, name) for mode, (_, port) in servers.items()}
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    figures = {}
    for mode in servers:
        done = after[mode]["inference_stats"]["success"]
        began = before[mode]["inference_stats"]["success"]
        per_request = (done["ns"] - began["ns"]) / (done["count"] - began["count"]) / 1e3
        figures[mode] = (per_request, statistics.median(t for block in samples[mode] for t in block))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", help="recipes to measure (default: digits)")
    parser.add_argument("--target", default="onnxruntime_fp32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=40)
    args = parser.parse_args()
    print_host()
    with tempfile.TemporaryDirectory() as work:
        for recipe in args.recipe or ["digits"]:
            cache = Path(os.environ.get("MDBUILD_CACHE_DIR") or Path(work) / "cache")
            _, out = mdbuild([f"+recipe={recipe}", f"target={args.target}", "verify=quick"], Path(work), cache)
            artifact = artifacts(out)[-1]
            in_process = monitor_us(artifact, args.rounds)
            time.sleep(1)
            served = served_us(artifact, args.rounds, args.per_round)
            (on_us, on_p50), (off_us, off_p50) = served["on"], served["off"]
            print(f"{recipe} {args.target}: in process, per request: observe {in_process['observe']:.1f} µs (request path), "
                  f"record {in_process['record']:.1f} µs (monitor thread); "
                  f"server time per request on {on_us:.0f} µs, off {off_us:.0f} µs (difference {on_us - off_us:+.0f} µs); "
                  f"client p50 on {on_p50:.3f} ms, off {off_p50:.3f} ms (ratio {on_p50 / off_p50:.3f})")


if __name__ == "__main__":
    main()
