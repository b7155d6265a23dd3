"""The KServe v2 statistics extension, as Triton defines it: GET /v2/models/<name>/stats answers the
cumulative count and nanoseconds of successful and failed requests, time queued for a batch, and
time spent preparing inputs, running the model and encoding outputs, per request and per batch
size. Client-side latency minus compute_infer is the server's own overhead. An /infer or /classify
request counts once its body is read and the route serves this model: `fail` holds those that then
failed (inputs, model or encoding); requests refused earlier (route, token, body size, an image
route the model lacks) are only in /metrics."""

import threading
import time

PHASES = ("compute_input", "compute_infer", "compute_output")


def _duration():
    return {"count": 0, "ns": 0}


def _add(stat, ns):
    stat["count"] += 1
    stat["ns"] += int(ns)


class Statistics:
    def __init__(self, model_name):
        self._lock = threading.Lock()
        self._name = model_name
        # cache_hit stays 0: there is no response cache; the schema has the field.
        self._inference = {key: _duration() for key in ("success", "fail", "queue", *PHASES, "cache_hit")}
        self._batches = {}  # rows -> {phase: duration}
        self._inferences = 0
        self._executions = 0
        self._last_ms = 0

    def executed(self, rows, input_ns, infer_ns, output_ns):
        """One run of the model over `rows` rows: one request's, or a dynamic batch's."""
        with self._lock:
            self._executions += 1
            self._inferences += rows
            by_phase = self._batches.setdefault(rows, {phase: _duration() for phase in PHASES})
            for phase, ns in zip(PHASES, (input_ns, infer_ns, output_ns)):
                _add(by_phase[phase], ns)

    def succeeded(self, total_ns, queue_ns, input_ns, infer_ns, output_ns):
        """One request answered: its whole time in the server and each phase of it."""
        with self._lock:
            self._last_ms = int(time.time() * 1e3)
            for key, ns in zip(("success", "queue", *PHASES), (total_ns, queue_ns, input_ns, infer_ns, output_ns)):
                _add(self._inference[key], ns)

    def failed(self, total_ns):
        with self._lock:
            _add(self._inference["fail"], total_ns)

    def render(self):
        with self._lock:
            return {"model_stats": [{
                "name": self._name, "version": "1", "last_inference": self._last_ms,
                "inference_count": self._inferences, "execution_count": self._executions,
                "inference_stats": {key: dict(stat) for key, stat in self._inference.items()},
                "batch_stats": [{"batch_size": rows, **{phase: dict(stat) for phase, stat in phases.items()}}
                                for rows, phases in sorted(self._batches.items())],
            }]}
