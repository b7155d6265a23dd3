"""The artifact's HTTP server: KServe v2 REST (JSON and binary tensors), image classification for
recipes with preprocessing and labels, dynamic batching, Prometheus metrics, the statistics
extension (time of each phase of every request), bearer-token auth, integrity check against the
manifest, graceful SIGTERM, and a self-test of the stored samples."""

import argparse
import hmac
import io
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from . import protocol
from .accuracy import compare, judge, read_cases, run_case
from .batching import Batcher
from .host import describe_cpu, same_numerics
from .metrics import Metrics
from .monitor import Monitor
from .protocol import RequestError
from .statistics import Statistics

IDLE_TIMEOUT_S = 60.0


class Service:
    """The model behind the routes: inference (batched or not), metadata, classification, and the
    statistics of every request that ran the model."""

    def __init__(self, model, manifest, settings, labels, reference=None):
        """`reference`: the build's monitoring statistics (None: no monitoring)."""
        self.model = model
        self.manifest = manifest
        self.name = manifest["recipe"]
        self.settings = settings
        self.labels = labels
        self.metrics = Metrics(self.name)
        self.statistics = Statistics(self.name)
        self.monitor = Monitor(self.name, reference, settings["drift_window"]) if reference else None
        batching = settings["max_batch_size"] > 1 and all(dims and dims[0] is None for _, dims in model.inputs.values())
        self.batcher = Batcher(model.run, settings["max_batch_size"], settings["max_queue_delay_ms"] / 1e3,
                               self._executed) if batching else None

    def _executed(self, rows, input_ns, infer_ns, output_ns):
        self.metrics.batch(rows)
        self.statistics.executed(rows, input_ns, infer_ns, output_ns)

    def run(self, feeds):
        """(outputs, ns queued for a batch, ns the model ran)."""
        if self.batcher is not None:
            return self.batcher.run(feeds)
        began = time.perf_counter_ns()
        outputs = self.model.run(feeds)
        infer_ns = time.perf_counter_ns() - began
        self._executed(len(next(iter(feeds.values()))), 0, infer_ns, 0)
        return outputs, 0, infer_ns

    def inference(self, prepare, answer):
        """One request through the model: `prepare()` gives (feeds, context), `answer(outputs,
        context)` the response; the time of each phase goes to the statistics."""
        began = time.perf_counter_ns()
        try:
            feeds, context = prepare()
            prepared = time.perf_counter_ns()
            outputs, queue_ns, infer_ns = self.run(feeds)
            ran = time.perf_counter_ns()
            if self.monitor is not None:
                self.monitor.observe(feeds, outputs)
            response = answer(outputs, context)
        except Exception:
            self.statistics.failed(time.perf_counter_ns() - began)
            raise
        done = time.perf_counter_ns()
        self.statistics.succeeded(done - began, queue_ns, prepared - began, infer_ns, done - ran)
        return response

    def infer(self, body, header_length):
        def prepare():
            request, binary = protocol.split_body(body, header_length)
            feeds = protocol.decode_inputs(request, binary, self.model.inputs, self.settings["allow_nonfinite"],
                                           self.manifest["requests"], self.max_rows())
            return feeds, (request.get("id"), protocol.requested_outputs(request, self.model.outputs))

        def answer(results, context):
            request_id, outputs = context
            return protocol.encode_response(self.name, request_id, results, outputs)

        return self.inference(prepare, answer)

    def classify(self, body, query):
        if not self.labels:
            raise RequestError("this model takes no images: its recipe declares no serving.labels", status=404, kind="not_found")
        if len(self.model.inputs) != 1:
            raise RequestError("the image route serves one-input models; this one takes "
                               f"{sorted(self.model.inputs)}: use /infer", status=404, kind="not_found")
        (name, (dtype, dims)), = self.model.inputs.items()

        def prepare():
            from PIL import Image, UnidentifiedImageError

            from .preprocess import load_image

            try:
                top_k = int(query.get("top_k", [self.settings["top_k"]])[0])
            except ValueError:
                raise RequestError("top_k must be a whole number") from None
            try:
                pixels = load_image(io.BytesIO(body), self.manifest["config"]["preprocess"], formats=["PNG", "JPEG"])
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
                raise RequestError(f"the body is not a PNG or JPEG image this server can read ({exc})", kind="bad_image") from None
            if len(pixels.shape) != len(dims) - 1 or any(d is not None and d != p for d, p in zip(dims[1:], pixels.shape)):
                raise RequestError(f"the preprocessed image has shape {list(pixels.shape)}; the model takes {dims[1:]}",
                                   kind="bad_image")
            return {name: pixels[None].astype(dtype)}, top_k

        def answer(results, top_k):
            output = self.manifest["config"]["serving"].get("output") or next(iter(self.model.outputs))
            scores = results[output][0].astype(np.float64).reshape(-1)
            if self.settings["scores"] == "softmax":
                scores = np.exp(scores - scores.max())
                scores /= scores.sum()
            best = np.argsort(-scores)[: max(1, top_k)]
            predictions = [{"index": int(i), "label": self.labels[i] if i < len(self.labels) else str(i),
                            "score": float(scores[i])} for i in best]
            return json.dumps({"model_name": self.name, "predictions": predictions}).encode(), {"Content-Type": "application/json"}

        return self.inference(prepare, answer)

    def metadata(self):
        def describe(tensors):
            return [{"name": n, "datatype": protocol.V2_NAMES.get(t, t), "shape": [-1 if d is None else d for d in dims]}
                    for n, (t, dims) in tensors.items()]

        return {"name": self.name, "versions": ["1"], "platform": self.manifest["runtime"]["backend"],
                "inputs": describe(self.model.inputs), "outputs": describe(self.model.outputs)}

    def max_rows(self):
        """The most rows a request may hold: an engine's optimization profile bounds its batch (None: any)."""
        return self.manifest["runtime"].get("max_batch_size")


_JSON = {"Content-Type": "application/json"}


def routes(model):
    """{(method, path): (label in /metrics, open without the token, the Handler method answering)}."""
    at = f"/v2/models/{model}"
    table = {("GET", "/v2/health/live"): ("health", True, Handler._live), ("GET", "/metrics"): ("metrics", False, Handler._metrics),
             ("GET", "/v2"): ("metadata", False, Handler._server_metadata),
             ("POST", at + "/classify"): ("classify", False, Handler._classify)}
    table.update({("GET", path): ("health", True, Handler._ready) for path in ("/v2/health/ready", at + "/ready")})
    table.update({("GET", path): ("statistics", False, Handler._statistics)
                  for path in ("/v2/models/stats", at + "/stats", at + "/versions/1/stats")})
    table.update({("GET", path): ("metadata", False, Handler._model_metadata) for path in (at, at + "/versions/1")})
    table.update({("POST", path): ("infer", False, Handler._infer) for path in (at + "/infer", at + "/versions/1/infer")})
    return table


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True
    # socketserver's listen backlog of 5 overflows when a load balancer opens connections in a
    # burst: each dropped handshake costs the client a 1 s SYN retransmit (64 at once took 3-9 s).
    request_queue_size = 1024

    def __init__(self, address, service, token, grace_s=30.0):
        self.service = service
        self.routes = routes(service.name)
        self.token = token
        self.grace_s = grace_s
        self.idle = set()  # keep-alive connections waiting for their next request
        self.open = set()  # every connection
        self.idle_lock = threading.Lock()
        self.stopping = False
        super().__init__(address, Handler)

    def stop(self):
        """Stop accepting, drop idle keep-alive connections, let requests in flight finish; after
        the grace period, close what is still open (a client that never finishes its request)."""
        with self.idle_lock:
            self.stopping = True
            idle = list(self.idle)
        self.shutdown()
        _close(idle)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline:
            with self.idle_lock:
                if not self.open:
                    return
                _close(list(self.idle))
            time.sleep(0.05)
        with self.idle_lock:
            _close(list(self.open), arriving_too=True)


def _close(connections, arriving_too=False):
    """Shuts the connections down; an idle one whose next request has begun arriving (the socket is
    readable) is left to its handler, which serves that request and then closes, unless `arriving_too`."""
    for connection in connections:
        try:
            if not arriving_too and select.select([connection], [], [], 0)[0]:
                continue
            connection.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mdbuild-serve"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms delayed-ACK stall per request

    def setup(self):
        super().setup()
        with self.server.idle_lock:
            self.server.open.add(self.connection)

    def finish(self):
        with self.server.idle_lock:
            self.server.open.discard(self.connection)
        super().finish()

    def handle_one_request(self):
        # Between requests a keep-alive connection is idle, and SIGTERM may close it at once; once the
        # first byte of a request has arrived it is not idle (a request line still arriving was cut).
        if not self._request_started():
            self.close_connection = True
            return
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (OSError, ValueError):
            self.raw_requestline = b""
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        self._serve()
        self.wfile.flush()
        if self.server.stopping and not self._next_sent():  # a request already sent is served before closing
            self.close_connection = True

    def _next_sent(self):
        """Whether the next request's first byte is here already (read ahead, or in the socket)."""
        self.connection.settimeout(0)
        try:
            return bool(self.rfile.peek(1))
        except (OSError, ValueError):
            return False
        finally:
            self.connection.settimeout(self.timeout)

    def _request_started(self):
        """Waits, idle, for the next request's first byte: True once it is here (read ahead already, or
        in the socket), False at the end of the connection, the idle timeout, or SIGTERM."""
        if self._next_sent():  # a pipelined request read ahead with the last one
            return True
        with self.server.idle_lock:
            if self.server.stopping:
                return False
            self.server.idle.add(self.connection)
        try:
            ready, _, _ = select.select([self.connection], [], [], self.timeout)
        except (OSError, ValueError):
            ready = []
        finally:
            with self.server.idle_lock:
                self.server.idle.discard(self.connection)
        return bool(ready)

    def log_message(self, fmt, *args):  # the access log below replaces http.server's own lines
        pass

    def _serve(self):
        service = self.server.service
        started = time.perf_counter()
        service.metrics.started()
        status, kind, sent = 500, None, 0
        self.body_read = False
        self.route = "other"  # until _route finds the request's route
        url = urlsplit(self.path)
        try:
            body, headers = self._route(service, url)
            status = 200
        except RequestError as exc:
            status, kind = exc.status, exc.kind
            body, headers = json.dumps({"error": str(exc)}).encode(), {"Content-Type": "application/json"}
        except Exception as exc:  # a fault of the server or runtime, never of the request
            kind = "internal"
            body, headers = json.dumps({"error": f"internal error: {exc}"}).encode(), {"Content-Type": "application/json"}
        if not self.body_read and self.headers.get("Content-Length", "0") != "0":
            self.close_connection = True  # an unread body would be taken for the next request
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            sent = len(body)
        except OSError:
            kind = kind or "disconnected"
        seconds = time.perf_counter() - started
        service.metrics.finished(self.route, status, seconds, kind)
        sys.stderr.write(json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "client": self.client_address[0], "method": self.command,
            "path": url.path, "status": status, "error": kind, "ms": round(seconds * 1e3, 3),
            "bytes_in": _length(self.headers.get("Content-Length")), "bytes_out": sent,
        }) + "\n")

    def _route(self, service, url):
        """(body, headers) of the request. Its route's label is set before the token is checked or the
        request served, so a refused request is counted under its route."""
        found = self.server.routes.get((self.command, url.path.rstrip("/")))
        if found is None:
            self._authorize()  # without the token, not even which routes exist
            raise RequestError(f"no route {self.command} {url.path}; the model is at /v2/models/{service.name}",
                               status=404, kind="not_found")
        self.route, public, answer = found
        if not public:
            self._authorize()
        return answer(self, service, url)

    def _live(self, service, url):
        return b'{"live": true}', _JSON

    def _ready(self, service, url):
        return b'{"ready": true}', _JSON

    def _metrics(self, service, url):
        monitored = service.monitor.render() if service.monitor is not None else []
        return service.metrics.render(monitored).encode(), {"Content-Type": "text/plain; version=0.0.4"}

    def _server_metadata(self, service, url):
        meta = {"name": "mdbuild-serve", "version": service.manifest["mdbuild"], "extensions": ["binary_tensor_data", "statistics"]}
        return json.dumps(meta).encode(), _JSON

    def _statistics(self, service, url):
        return json.dumps(service.statistics.render()).encode(), _JSON

    def _model_metadata(self, service, url):
        return json.dumps(service.metadata()).encode(), _JSON

    def _infer(self, service, url):
        return service.infer(self._body(service), self.headers.get(protocol.HEADER_LENGTH))

    def _classify(self, service, url):
        return service.classify(self._body(service), parse_qs(url.query))

    def _authorize(self):
        token = self.server.token
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, answered 500);
        # http.server decodes header values as latin-1, so that encoding gives back the bytes sent.
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        sent = credentials.encode("latin-1", "replace") if scheme.lower() == "bearer" else b""  # schemes ignore case
        if token and not hmac.compare_digest(sent, token.encode()):
            raise RequestError("missing or wrong bearer token (Authorization: Bearer <token>)", status=401, kind="unauthorized")

    def _body(self, service):
        if self.headers.get("Transfer-Encoding"):  # with a Content-Length too, proxies disagree on where it ends
            self.close_connection = True
            raise RequestError("Transfer-Encoding is not supported: send a Content-Length", status=411, kind="no_length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            self.close_connection = True
            raise RequestError("a Content-Length header is required", status=411, kind="no_length")
        if len(lengths) > 1 or not lengths[0].isascii() or not lengths[0].isdigit():  # int() takes "+10", "1_0", " 10"
            self.close_connection = True
            raise RequestError(f"Content-Length must be one number of decimal digits, not {', '.join(map(repr, lengths))}",
                               kind="bad_length")
        length = int(lengths[0])
        if length < 0 or length > service.settings["max_body_bytes"]:
            self.close_connection = True
            raise RequestError(f"the body of {length} bytes exceeds the limit of {service.settings['max_body_bytes']}",
                               status=413, kind="too_large")
        try:
            body = self.rfile.read(length)
        except OSError:
            self.close_connection = True
            raise RequestError("the connection closed while the body was read", kind="disconnected") from None
        self.body_read = True
        if len(body) != length:
            self.close_connection = True
            raise RequestError(f"the body ended after {len(body)} of {length} bytes", kind="truncated")
        return body


def _length(header):
    """A Content-Length for the access log: a number, or what was sent where it is not one."""
    return int(header) if header and header.isascii() and header.isdigit() else header


def selftest(here, model, tolerance, manifest):
    """Reruns the stored verification samples; True when every output passes. On a CPU that computes as
    the build host did (same CPU, numeric flags and arithmetic), each output must match the build's own
    outputs (rel L2 at most `tolerance`). Elsewhere kernels or arithmetic differ (an fp16 artifact built
    where float16 arithmetic is missing computes in it here), so each output must stay within the
    verification limits of the precision computed here, against the source model's outputs."""
    with np.load(here / "samples.npz") as archive:
        cases = read_cases(archive)
    names = list(cases[0]["artifact"])
    limits = None
    differences = _differences(model, manifest)
    if differences:
        for line in differences:
            print(f"selftest: {line}")
        computed = getattr(model, "compute", None)
        verification = manifest["verification"]
        limits = (verification.get("limits_by_compute") or {}).get(computed["precision"]) if computed \
            else verification.get("tolerance")
        if limits is None:
            print("selftest: the manifest has no verification limits for what this host computes in: MISMATCH")
            return False
    answers = [run_case(model, case["input"], names) for case in cases]
    ok = True
    for name in names:
        actual = [answer[name] for answer in answers]
        if limits is None:
            metrics = compare([case["artifact"][name] for case in cases], actual)
            passed = metrics["finite"] and metrics["rel_l2"] <= tolerance
            detail = f"rel_l2 {metrics['rel_l2']:.3g} against the build's outputs (limit {tolerance:g})"
        else:
            checks = judge(compare([case["output"][name] for case in cases], actual), limits)
            passed = all(check["passed"] for check in checks)
            detail = f"against the source model at the {limits['level']} limits: " + ", ".join(
                f"{c['metric']} {c['value']:.4g} (limit {c['limit']:g})" for c in checks if c["metric"] != "finite")
        ok &= passed
        print(f"selftest {name}: {detail}: {'ok' if passed else 'MISMATCH'}")
    return ok


def _differences(model, manifest):
    """Why this host may compute otherwise than the build host did, one line each (none: it does not)."""
    built, computed = manifest["verification"].get("compute"), getattr(model, "compute", None)
    differences = [] if same_numerics(manifest["host"]) else [
        f"this host ({describe_cpu()}) is not the build host ({manifest['host']['cpu']}, numeric flags: "
        f"{' '.join(manifest['host'].get('cpu_flags') or []) or '-'})"]
    if computed and built and computed["precision"] != built["precision"]:
        differences.append(f"this host computes in {computed['words']}; the build verified {built['words']}")
    proxy = manifest["verification"].get("proxy")
    if proxy:
        differences.append(f"the build verified {proxy['model_file']} with ONNX Runtime CPU ({proxy['why']}); "
                           f"this host runs {getattr(model, 'description', 'the model')}")
    return differences


def parse_args(argv, defaults):
    parser = argparse.ArgumentParser(description="Serve the model over the KServe v2 REST protocol.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="serve KServe v2 gRPC on this port too (default: off; 0 picks a free one; needs "
                             "requirements-grpc.txt)")
    parser.add_argument("--max-batch-size", type=int, default=defaults["max_batch_size"],
                        help=f"dynamic batching: most rows per batch, 1 switches it off (recipe: {defaults['max_batch_size']})")
    parser.add_argument("--max-queue-delay-ms", type=float, default=defaults["max_queue_delay_ms"],
                        help=f"dynamic batching: longest wait for a batch to fill (recipe: {defaults['max_queue_delay_ms']})")
    parser.add_argument("--max-body-bytes", type=int, default=defaults["max_body_bytes"], help="largest request body")
    parser.add_argument("--token", default=os.environ.get("MDBUILD_SERVE_TOKEN"),
                        help="require 'Authorization: Bearer TOKEN' (default: $MDBUILD_SERVE_TOKEN; health stays open)")
    parser.add_argument("--monitoring", choices=("on", "off"), default="on" if defaults["monitoring"] else "off",
                        help="drift, range and confidence metrics of the model's inputs and outputs on /metrics "
                             f"(recipe: {'on' if defaults['monitoring'] else 'off'})")
    parser.add_argument("--drift-window", type=int, default=defaults["drift_window"],
                        help=f"rows the drift statistics cover (recipe: {defaults['drift_window']})")
    parser.add_argument("--selftest", action="store_true", help="rerun the stored verification samples and exit")
    parser.add_argument("--build-engine", action="store_true",
                        help="build this GPU's TensorRT engine now (a deferred build), self-test it and exit; "
                             "a start builds it too when it is missing")
    parser.add_argument("--selftest-tolerance", type=float, default=1e-3,
                        help="largest relative L2 error of --selftest against the build's own outputs, on a host that "
                             "computes as the build host did")
    return parser.parse_args(argv)


def _first_line(exc):
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def main(here, runtime, defaults, argv=None):
    """`runtime`: the backend's runtime module (load; optionally build, for an engine built on this host)."""
    args = parse_args(argv, defaults)
    manifest = json.loads((here / "manifest.json").read_text())  # its files were checked by serve.py
    model_dir = here / manifest["runtime"]["model_dir"]
    build = getattr(runtime, "build", None)
    built = None
    try:
        if args.build_engine and build is None:
            raise RuntimeError(f"the {manifest['runtime']['backend']} backend builds nothing on the serving host")
        if build is not None:  # an engine built on this host: until its self-test passes, it is not served
            built = build(model_dir, manifest["runtime"], required=args.build_engine)
            if built is not None:
                print(f"{built.name}: built on this host; self-testing it", flush=True)
        model = runtime.load(model_dir, manifest["runtime"])
    except RuntimeError as exc:  # e.g. this CPU cannot compute in a precision the artifact allows; no GPU
        what = "cannot build the engine here" if args.build_engine else "refusing to start: the model does not load on this host"
        print(f"{what}: {_first_line(exc)}", file=sys.stderr)
        return 2
    if built is not None:
        if not selftest(here, model, args.selftest_tolerance, manifest):
            runtime.reject(built)
            print(f"refusing to serve: the engine built here fails the self-test (moved aside as {built.name}.rejected)",
                  file=sys.stderr)
            return 1
        runtime.accept(built)
    if args.selftest:
        return 0 if selftest(here, model, args.selftest_tolerance, manifest) else 1
    if args.build_engine:
        return 0
    labels_path = here / "labels.txt"
    labels = labels_path.read_text().splitlines() if labels_path.is_file() else None
    # An engine takes batches up to its optimization profile's max.
    largest = min(args.max_batch_size, manifest["runtime"].get("max_batch_size") or args.max_batch_size)
    settings = {**defaults, "max_batch_size": largest, "max_queue_delay_ms": args.max_queue_delay_ms,
                "max_body_bytes": args.max_body_bytes, "drift_window": args.drift_window}
    statistics = here / "monitoring" / "reference.json"
    if args.monitoring == "on" and not statistics.is_file():
        print("refusing to start: --monitoring on, but this artifact has no monitoring/reference.json (built with "
              "serving.monitoring=false)", file=sys.stderr)
        return 2
    reference = json.loads(statistics.read_text()) if args.monitoring == "on" else None
    if reference and args.drift_window < 1:
        print(f"refusing to start: --drift-window {args.drift_window}: give at least 1 row", file=sys.stderr)
        return 2
    if reference and not reference["without_drift_alerts"] and args.drift_window < reference["drift_min_rows"]:
        print(f"warning: --drift-window {args.drift_window} is below the {reference['drift_min_rows']} rows the shipped "
              "drift and collapse alerts wait for (monitoring/alerts.yml): they cannot fire", file=sys.stderr)
    service = Service(model, manifest, settings, labels, reference)
    if args.grpc_port is not None:
        try:  # grpcio and protobuf are optional: only --grpc-port needs them
            from . import grpc_v2
        except ImportError as exc:
            print(f"--grpc-port needs grpcio and protobuf: pip install -r requirements-grpc.txt ({exc})", file=sys.stderr)
            return 2
    try:
        httpd = Server((args.host, args.port), service, args.token)
    except OSError as exc:  # the port is taken, the address is not this host's
        print(f"cannot serve HTTP on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    rpc = None
    if args.grpc_port is not None:
        try:
            rpc, grpc_port = grpc_v2.start(service, args.token, args.host, args.grpc_port)
        except RuntimeError as exc:  # grpcio: "Failed to bind to address ..."
            httpd.server_close()
            print(f"cannot serve gRPC on {args.host}:{args.grpc_port}: {_first_line(exc)}", file=sys.stderr)
            return 2

    def stop():
        if rpc is not None:
            rpc.stop(httpd.grace_s)  # refuses new calls now, cancels those still running after the grace
        httpd.stop()

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop, daemon=True).start())
    host, port = httpd.server_address[:2]
    computed = getattr(model, "compute", None)
    print(f"serving {service.name} on http://{host}:{port}/v2/models/{service.name}"
          + (f" · gRPC on {host}:{grpc_port}" if rpc is not None else "")
          + (f" · computing in {computed['words']}" if computed else ""), flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        if rpc is not None:  # the batcher below serves gRPC calls too: they finish first
            rpc.stop(httpd.grace_s).wait()
        if service.batcher is not None:
            service.batcher.close()
        if hasattr(model, "close"):  # a runtime holding device memory (TensorRT) frees it
            model.close()
    return 0
