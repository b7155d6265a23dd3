"""Issue-4 figures from one run: the generated server under load at 1, 4 and 16 concurrent clients
(binary tensors over keep-alive connections), against the raw runtime in this process, and dynamic
batching on versus off at 16 clients.

    .venv/bin/python benchmarks/serving_load.py [--recipe resnet50] [--targets onnxruntime_fp32,openvino_int8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import artifacts, load_artifact, mdbuild, p50_interleaved


def binary_body(feeds) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [{"name": n, "shape": list(v.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": v.nbytes}} for n, v in feeds.items()],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(v.tobytes() for v in feeds.values()), {"Inference-Header-Content-Length": str(len(header))}


def start(artifact: Path, *args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(artifact / "serve.py"), "--port", "0", *args], cwd=artifact,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, int(proc.stdout.readline().split("127.0.0.1:")[1].split("/")[0])


def load(port: int, path: str, body: bytes, headers: dict, clients: int, seconds: float) -> dict:
    """Each client sends requests back to back for `seconds`; latencies of all requests."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while time.perf_counter() < deadline:
            begin = time.perf_counter()
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
            mine.append((time.perf_counter() - begin) * 1e3)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"throughput": len(latencies) / elapsed, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "requests": len(latencies)}


def batch_ceiling(model, feeds, seconds: float = 3.0) -> dict[int, float]:
    """Images per second of the raw runtime at batch 1, 4, 8 and 16: the most batching can gain."""
    import numpy as np

    rates = {}
    for size in (1, 4, 8, 16):
        batch = {name: np.repeat(value, size, axis=0) for name, value in feeds.items()}
        model.run(batch)
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model.run(batch)
            runs += 1
        rates[size] = runs * size / (time.perf_counter() - started)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="resnet50")
    parser.add_argument("--targets", default="onnxruntime_fp32,openvino_int8")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir, cache = Path(scratch) / "work", Path(scratch) / "cache"
        workdir.mkdir()
        _, output = mdbuild(["-m", f"+recipe={args.recipe}", f"target={args.targets}", "verify=quick"], workdir, cache)
        for artifact in artifacts(output):
            model, feeds, manifest = load_artifact(artifact)
            body, headers = binary_body({name: value for name, value in feeds.items()})
            path = f"/v2/models/{manifest['recipe']}/infer"
            print(f"\n{manifest['target']}")
            proc, port = start(artifact)
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

                def served() -> None:
                    connection.request("POST", path, body=body, headers=headers)
                    connection.getresponse().read()

                medians = p50_interleaved({"in-process": lambda: model.run(feeds), "server c=1": served}, rounds=6)
                print(f"  p50 in-process {medians['in-process']:.2f} ms, server (binary, c=1) {medians['server c=1']:.2f} ms, "
                      f"overhead {medians['server c=1'] - medians['in-process']:.2f} ms (goal <= 2)")
                for clients in (1, 4, 16):
                    r = load(port, path, body, headers, clients, args.seconds)
                    print(f"  c={clients:<2} no batching   {r['throughput']:7.1f} req/s  p50 {r['p50']:7.2f}  p99 {r['p99']:7.2f} ms")
                    if clients == 16:
                        unbatched = r["throughput"]
            finally:
                proc.terminate()
                proc.wait()
            ceiling = batch_ceiling(model, feeds)
            print("  in-process images/s by batch size: " + ", ".join(f"{b}: {v:.1f}" for b, v in ceiling.items())
                  + f"  (best batch gain over batch 1: {max(ceiling.values()) / ceiling[1]:.2f}x: what batching can win here)")
            for size in (8, 16):
                proc, port = start(artifact, "--max-batch-size", str(size), "--max-queue-delay-ms", "5")
                try:
                    r = load(port, path, body, headers, 16, args.seconds)
                    print(f"  c=16 batching<={size:<2} {r['throughput']:7.1f} req/s  p50 {r['p50']:7.2f}  p99 {r['p99']:7.2f} ms"
                          f"  -> {r['throughput'] / unbatched:.2f}x of no batching (goal >= 1.3)")
                finally:
                    proc.terminate()
                    proc.wait()


if __name__ == "__main__":
    main()
