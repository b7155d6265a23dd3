"""Issue-14 figures for the generated server: fuzzed requests of every malformed class, and SIGTERM
under load; prints the counts that must be zero.

    .venv/bin/python benchmarks/fuzz_server.py [--requests 10000] [--load-trials 8]

Builds the shipped `tiny` recipe, starts its serve.py with a bearer token on 127.0.0.1, then:
- sends `--requests` requests drawn from the classes below over keep-alive connections, counting
  answers of 500 and above, connections that hang (no answer within 30 s) and the server's liveness;
- `--load-trials` times: 6 clients send large requests slowly while the server gets SIGTERM, counting
  requests fully sent that got no complete answer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import artifacts, mdbuild, print_host

TOKEN = "s3cret"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--load-trials", type=int, default=8)
    args = parser.parse_args()
    print_host()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) / "work"
        (work / "recipes").mkdir(parents=True)
        _, output = mdbuild(["+recipe=tiny", "verify=quick"], work, Path(scratch) / "cache")
        artifact = artifacts(output)[0]
        counts = _fuzz(artifact, args.requests, random.Random(0))
        print(f"{args.requests} fuzzed requests: " + ", ".join(f"{key} {value}" for key, value in counts.items()))
        cut = sum(_sigterm_under_load(artifact) for _ in range(args.load_trials))
        print(f"SIGTERM under load, {args.load_trials} trials of 6 slow large requests: {cut} fully sent requests "
              "without a complete answer")


class _Server:
    def __init__(self, artifact: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-I", str(artifact / "serve.py"), "--port", "0", "--token", TOKEN,
                                      *args], cwd=artifact, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        self.port = int(line.split("127.0.0.1:")[1].split("/")[0])

    def exchange(self, raw: bytes, timeout: float = 30.0) -> bytes | None:
        """The raw reply to raw request bytes on a new connection; None when it hangs past the timeout."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as connection:
            reply = b""
            try:
                connection.sendall(raw)
                connection.shutdown(socket.SHUT_WR)
            except OSError:  # the server answered and closed before all was sent: its answer is still there
                pass
            try:
                while chunk := connection.recv(65536):
                    reply += chunk
            except socket.timeout:
                return None
            except OSError:
                pass
            return reply

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=60)


def _request(body: bytes, headers: dict | None = None, path: str = "/v2/models/tiny/infer", length: str | None = None,
             auth: bytes = f"Bearer {TOKEN}".encode()) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: x", b"Authorization: " + auth,
             b"Content-Length: " + (length if length is not None else str(len(body))).encode()]
    lines += [f"{key}: {value}".encode() for key, value in (headers or {}).items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _classes(rng: random.Random) -> list:
    """Request makers, one per malformed class (and a valid one, which must keep working)."""
    valid = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 96, 96], "datatype": "FP32",
                                    "data": [0.5] * (3 * 96 * 96)}]}).encode()
    small = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [1] * 12}]}).encode()
    return [
        lambda: _request(valid),
        lambda: _request(valid[: rng.randrange(len(valid))]),
        lambda: _request(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))),
        lambda: _request(small.replace(b"FP32", rng.choice([b"FP16", b"BYTES", b"INT64", b"\\u0000", b"fp32"]))),
        lambda: _request(valid.replace(b"0.5", rng.choice([b"true", b"\"1e3\"", b"null", b"[0.5]", b"1e999"]), 1)),
        lambda: _request(valid.replace(b"[1, 3, 96, 96]", rng.choice([b"[0, 3, 96, 96]", b"[-1, 3, 96, 96]",
                                                                       b"[1, 3, 96]", b"[2**31, 3, 96, 96]"]))),
        lambda: _request(b'{"inputs": ' + b"[" * rng.randrange(100, 200_000) + b"]"),
        lambda: _request(json.dumps(rng.choice([[], None, 3, "x", {"inputs": {}}, {"inputs": [None]}])).encode()),
        lambda: _request(valid, length=rng.choice(["+10", "1_0", " 5", "-1", "0x10", "99999999999", "٣"])),
        lambda: _request(valid, headers={"Content-Length": str(len(valid))}),  # given twice
        lambda: _request(valid, auth=rng.choice(["Bearer été".encode("latin-1"), b"Bearer \xff\xfe", b"", b"Basic x"])),
        lambda: _request(valid, headers={"Inference-Header-Content-Length": str(rng.randrange(-5, 10**7))}),
        lambda: _request(b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(100)), path="/v2/models/tiny/classify"),
        lambda: rng.choice([b"GET / HTTP/1.1\r\n\r\n", b"\r\n\r\n", b"POST /v2/models/tiny/infer HTTP/9.9\r\n\r\n",
                            b"X" * 70_000 + b"\r\n\r\n", b"POST /" + "é".encode() * 10 + b" HTTP/1.1\r\n\r\n"]),
    ]


def _fuzz(artifact: Path, count: int, rng: random.Random) -> dict[str, int]:
    server = _Server(artifact)
    # "no status line": an empty request (closed unanswered) or an unknown HTTP version, which
    # http.server answers HTTP/0.9-style (a page without a status line); neither is an error of ours.
    counts = {"5xx": 0, "hung": 0, "no status line": 0, "2xx": 0, "4xx": 0}
    makers = _classes(rng)
    try:
        for _ in range(count):
            reply = server.exchange(rng.choice(makers)())
            if reply is None:
                counts["hung"] += 1
                continue
            status = reply.split(b"\r\n", 1)[0].split(b" ")
            code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
            key = "5xx" if code >= 500 else "4xx" if code >= 400 else "2xx" if code >= 200 else "no status line"
            counts[key] += 1
        counts["alive after"] = int(b" 200 " in (server.exchange(b"GET /v2/health/live HTTP/1.1\r\n\r\n") or b""))
    finally:
        server.stop()
    return counts


def _sigterm_under_load(artifact: Path) -> int:
    """Requests fully sent (slowly, in pieces) around a SIGTERM that got no complete 200."""
    server = _Server(artifact, "--max-batch-size", "8")
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 96, 96], "datatype": "FP32",
                                   "data": [0.25] * (3 * 96 * 96)}]}).encode()
    raw = _request(body)
    cut = []

    def client() -> None:
        sent = False
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
                for start in range(0, len(raw), 16384):
                    connection.sendall(raw[start:start + 16384])
                    time.sleep(0.01)
                sent = True
                reply = b""
                while b"\r\n\r\n" not in reply and (chunk := connection.recv(65536)):
                    reply += chunk
                cut.append(not reply.startswith(b"HTTP/1.1 200"))
        except OSError:
            cut.append(sent)  # refused before it was sent: the server had stopped accepting, as it should

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    os.kill(server.proc.pid, signal.SIGTERM)
    for thread in threads:
        thread.join()
    server.proc.wait(timeout=60)
    return sum(cut)


if __name__ == "__main__":
    main()
