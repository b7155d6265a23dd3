"""Issue-4 figures from one run: the generated server under load at 1, 4 and 16 concurrent clients
(binary tensors over keep-alive connections), against the raw runtime in this process, the server's
own cost per request over HTTP and over gRPC side by side, and dynamic batching on versus off at 16
clients.

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
from typing import Callable

from _common import artifacts, interleaved, load_artifact, mdbuild, print_host
from builder.serving.protocol import V2_NAMES


def binary_body(feeds) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [{"name": n, "shape": list(v.shape), "datatype": V2_NAMES[str(v.dtype)],
                                     "parameters": {"binary_data_size": v.nbytes}} for n, v in feeds.items()],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(v.tobytes() for v in feeds.values()), {"Inference-Header-Content-Length": str(len(header))}


def start(artifact: Path, *args: str) -> tuple[subprocess.Popen, int]:
    proc, line = _launch(artifact, *args)
    return proc, int(line.split("127.0.0.1:")[1].split("/")[0])


def start_with_grpc(artifact: Path, *args: str) -> tuple[subprocess.Popen, int, str]:
    """(the server, its HTTP port, its gRPC address)."""
    proc, line = _launch(artifact, "--grpc-port", "0", *args)
    return proc, int(line.split("127.0.0.1:")[1].split("/")[0]), line.split(" · gRPC on ", 1)[1].split()[0]


def _launch(artifact: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """serve.py on free ports, and its start line."""
    proc = subprocess.Popen([sys.executable, str(artifact / "serve.py"), "--port", "0", *args], cwd=artifact,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline()


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
    return {"throughput": len(latencies) / elapsed, "p50": statistics.median(latencies), "mean": statistics.fmean(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "requests": len(latencies)}


def overhead_ms(local: Callable[[], None], served: Callable[[], None], rounds: int = 12, per_round: int = 10) -> tuple[float, float, float]:
    """(in-process p50, server p50, server overhead) in ms. The overhead is the median of each
    round's difference, so a slow spell of the machine falls on both sides."""
    samples = interleaved({"local": local, "served": served}, rounds, per_round)
    rows = [(statistics.median(a), statistics.median(b)) for a, b in zip(samples["local"], samples["served"])]
    return (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows),
            statistics.median(r[1] - r[0] for r in rows))


def server_stats(port: int, model: str) -> dict:
    """The model's entry of the server's statistics extension."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", f"/v2/models/{model}/stats")
    return json.loads(connection.getresponse().read())["model_stats"][0]


def overhead_breakdown(before: dict, after: dict, client_mean_ms: float) -> str:
    """The server's own cost per request over a load run: the client's mean latency minus the
    model's mean run time, both sides measured on the same requests (statistics extension)."""
    before, after = before["inference_stats"], after["inference_stats"]
    count = after["success"]["count"] - before["success"]["count"]
    mean = {key: (after[key]["ns"] - before[key]["ns"]) / count / 1e6 for key in after}
    overhead = client_mean_ms - mean["compute_infer"]
    return (f"overhead {overhead:.2f} ms per request = client {client_mean_ms:.2f} - model {mean['compute_infer']:.2f} "
            f"(decode {mean['compute_input']:.2f}, queue {mean['queue']:.2f}, encode {mean['compute_output']:.2f}, "
            f"HTTP both sides and hand-offs {client_mean_ms - mean['success']:.2f})")


def transport_overheads(port: int, model: str, runners: dict[str, Callable[[], None]], rounds: int,
                        per_round: int = 20) -> dict[str, tuple[float, float]]:
    """{transport: (median client latency, median server overhead)} in ms at c=1: blocks of requests
    over each transport alternate; a block's overhead is its mean client latency minus the mean
    compute_infer of the same requests (statistics extension), so the model's own time drops out."""
    for run in runners.values():
        for _ in range(5):
            run()
    blocks: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            before = server_stats(port, model)["inference_stats"]
            began = time.perf_counter()
            for _ in range(per_round):
                run()
            client_ms = (time.perf_counter() - began) * 1e3 / per_round
            after = server_stats(port, model)["inference_stats"]
            infer_ms = (after["compute_infer"]["ns"] - before["compute_infer"]["ns"]) / per_round / 1e6
            blocks[name].append((client_ms, client_ms - infer_ms))
    return {name: (statistics.median(b[0] for b in rows), statistics.median(b[1] for b in rows))
            for name, rows in blocks.items()}


def grpc_runners(address: str, model: str, feeds, output: str) -> dict[str, Callable[[], None]]:
    """c=1 ModelInfer calls, inputs and outputs as raw bytes: one message serialized once and sent as
    is (as the HTTP runner sends one prebuilt body), and tritonclient.grpc building each request and
    reading each answer (what a client library adds)."""
    import grpc
    import tritonclient.grpc as triton

    from builder.serving.grpc_v2 import MESSAGES

    request = MESSAGES["ModelInferRequest"](model_name=model)
    for name, value in feeds.items():
        request.inputs.add(name=name, datatype=V2_NAMES[str(value.dtype)], shape=value.shape)
        request.raw_input_contents.append(value.tobytes())
    message = request.SerializeToString()
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1),
                                                      ("grpc.max_receive_message_length", -1)])
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
    client = triton.InferenceServerClient(address)
    inputs = []
    for name, value in feeds.items():
        tensor = triton.InferInput(name, list(value.shape), V2_NAMES[str(value.dtype)])
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return {"gRPC": lambda: infer(message), "gRPC tritonclient": lambda: client.infer(model, inputs).as_numpy(output)}


def batch_rates(model, feeds, sizes=(1, 4, 8, 16), rounds: int = 4, seconds: float = 1.0) -> dict[int, float]:
    """Images per second of the raw runtime by batch size (median over interleaved rounds): the
    most dynamic batching can win is the best of these over batch 1."""
    import numpy as np

    batches = {size: {name: np.repeat(value, size, axis=0) for name, value in feeds.items()} for size in sizes}
    for batch in batches.values():
        model.run(batch)
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(rounds):
        for size, batch in batches.items():
            runs, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                model.run(batch)
                runs += 1
            rates[size].append(runs * size / (time.perf_counter() - started))
    return {size: statistics.median(values) for size, values in rates.items()}


def model_macs(model_file: Path) -> int:
    """Multiply-accumulates of one sample (batch 1) in the model's convolutions and matmuls,
    counted on the graph as OpenVINO reads it (ONNX or OpenVINO IR)."""
    import numpy as np
    import openvino

    model = openvino.Core().read_model(str(model_file))
    model.reshape({port.get_any_name(): [1 if i == 0 and not d.is_static else d.get_length()
                                         for i, d in enumerate(port.get_partial_shape())] for port in model.inputs})
    total = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        weights = list(op.get_input_shape(1))
        if kind == "Convolution":
            depth = int(np.prod(weights[1:]))  # [out, in, k...]
        elif kind == "GroupConvolution":
            depth = int(np.prod(weights[2:]))  # [groups, out, in, k...]
        else:
            depth = weights[-1] if op.get_transpose_b() else weights[-2]
        total += int(np.prod(list(op.get_output_shape(0)))) * depth
    return total


def dense_matmul_rate(int8: bool, size: int = 2048, seconds: float = 3.0) -> float:
    """Multiply-accumulates per second of one large ONNX Runtime matmul (float32, or uint8 x int8):
    a reference for how close a network's own rate already is to what this CPU's kernels reach."""
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        node, kind, a = "MatMulInteger", TensorProto.UINT8, rng.integers(0, 255, (size, size), dtype=np.uint8)
        b, out = rng.integers(-127, 127, (size, size), dtype=np.int8), TensorProto.INT32
    else:
        node, kind, a = "MatMul", TensorProto.FLOAT, rng.random((size, size), dtype=np.float32)
        b, out = rng.random((size, size), dtype=np.float32), TensorProto.FLOAT
    graph = helper.make_graph([helper.make_node(node, ["a", "b"], ["y"])], "dense",
                              [helper.make_tensor_value_info("a", kind, [size, size])],
                              [helper.make_tensor_value_info("y", out, [size, size])], [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(None, {"a": a})
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {"a": a})
        runs += 1
    return runs * size**3 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="resnet50")
    parser.add_argument("--targets", default="onnxruntime_fp32,openvino_int8")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of batching off and on at 16 clients")
    parser.add_argument("--transport-rounds", type=int, default=8, help="alternations of HTTP and gRPC blocks at c=1")
    args = parser.parse_args()
    print_host()
    with tempfile.TemporaryDirectory() as scratch:
        workdir, cache = Path(scratch) / "work", Path(scratch) / "cache"
        workdir.mkdir()
        _, output = mdbuild(["-m", f"+recipe={args.recipe}", f"target={args.targets}", "verify=quick"], workdir, cache)
        for artifact in artifacts(output):
            model, feeds, manifest = load_artifact(artifact)
            body, headers = binary_body(feeds)
            path = f"/v2/models/{manifest['recipe']}/infer"
            print(f"\n{manifest['target']}")
            proc, port, grpc_address = start_with_grpc(artifact)
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

                def served() -> None:
                    connection.request("POST", path, body=body, headers=headers)
                    connection.getresponse().read()

                local, server, overhead = overhead_ms(lambda: model.run(feeds), served)
                print(f"  p50 in-process {local:.2f} ms, server (binary, c=1) {server:.2f} ms, "
                      f"overhead {overhead:.2f} ms (median of paired rounds; goal <= 2)")
                runners = {"HTTP": served, **grpc_runners(grpc_address, manifest["recipe"], feeds, next(iter(model.outputs)))}
                transports = transport_overheads(port, manifest["recipe"], runners, args.transport_rounds)
                for name, (client_ms, own_ms) in transports.items():
                    print(f"  {name:<17} c=1 binary: client {client_ms:7.2f} ms, overhead {own_ms:.2f} ms "
                          f"(client - compute_infer; median of {args.transport_rounds} interleaved blocks)")
                print(f"  gRPC / HTTP overhead {transports['gRPC'][1] / transports['HTTP'][1]:.2f}")
                for clients in (1, 4):
                    before = server_stats(port, manifest["recipe"])
                    r = load(port, path, body, headers, clients, args.seconds)
                    print(f"  c={clients:<2} no batching   {r['throughput']:7.1f} req/s  p50 {r['p50']:7.2f}  p99 {r['p99']:7.2f} ms")
                    if clients == 1:
                        print("       " + overhead_breakdown(before, server_stats(port, manifest["recipe"]), r["mean"]))
            finally:
                proc.terminate()
                proc.wait()
            batch_gain(artifact, model, feeds, manifest)
            modes = {"no batching": (), "batching<=8": ("--max-batch-size", "8", "--max-queue-delay-ms", "5"),
                     "batching<=16": ("--max-batch-size", "16", "--max-queue-delay-ms", "5")}
            runs: dict[str, list[dict]] = {mode: [] for mode in modes}
            for _ in range(args.rounds):
                for mode, flags in modes.items():
                    proc, port = start(artifact, *flags)
                    try:
                        load(port, path, body, headers, 16, 1.0)  # warm-up: threads, connections, buffers
                        before = server_stats(port, manifest["recipe"])
                        runs[mode].append(load(port, path, body, headers, 16, args.seconds))
                        after = server_stats(port, manifest["recipe"])
                        runs[mode][-1]["rows"] = ((after["inference_count"] - before["inference_count"])
                                                  / (after["execution_count"] - before["execution_count"]))
                    finally:
                        proc.terminate()
                        proc.wait()
            unbatched = statistics.median(r["throughput"] for r in runs["no batching"])
            for mode, results in runs.items():
                rate = statistics.median(r["throughput"] for r in results)
                p50, p99, rows = (statistics.median(r[key] for r in results) for key in ("p50", "p99", "rows"))
                ratio = "" if mode == "no batching" else f"  -> {rate / unbatched:.2f}x of no batching (goal >= 1.3)"
                print(f"  c=16 {mode:<13} {rate:7.1f} req/s  p50 {p50:7.2f}  p99 {p99:7.2f} ms  rows/run {rows:4.1f}{ratio}")


def batch_gain(artifact: Path, model, feeds, manifest) -> None:
    """Prints what batching can win at all: the raw runtime's rate by batch size, and how much of
    this CPU's dense-matmul rate batch 1 already reaches."""
    rates = batch_rates(model, feeds)
    macs = model_macs(artifact / manifest["runtime"]["model_dir"] / manifest["runtime"]["model_file"])
    int8 = manifest["target"].endswith("int8")
    dense = dense_matmul_rate(int8)
    print("  in-process images/s by batch size: " + ", ".join(f"{b}: {v:.1f}" for b, v in rates.items())
          + f"  (best over batch 1: {max(rates.values()) / rates[1]:.2f}x: the most batching can win here)")
    print(f"  {macs / 1e9:.2f} GMAC per image: batch 1 computes {macs * rates[1] / 1e9:.0f} GMAC/s, best batch "
          f"{macs * max(rates.values()) / 1e9:.0f}; one {'uint8 x int8' if int8 else 'float32'} 2048^3 matmul in "
          f"ONNX Runtime: {dense / 1e9:.0f} GMAC/s")


if __name__ == "__main__":
    main()
