"""Prometheus text-format metrics for the server: requests and errors by kind, latency and batch
size histograms, requests in flight, process CPU time and resident memory."""

import os
import threading
import time

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class _Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value):
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.total += 1
        self.sum += value

    def lines(self, name, labels):
        out = [f"# TYPE {name} histogram"]
        out += [f'{name}_bucket{{{labels},le="{bound}"}} {count}' for bound, count in zip(self.buckets, self.counts)]
        return out + [f'{name}_bucket{{{labels},le="+Inf"}} {self.total}', f"{name}_sum{{{labels}}} {self.sum}",
                      f"{name}_count{{{labels}}} {self.total}"]


class Metrics:
    def __init__(self, model_name):
        self._lock = threading.Lock()
        self._model = model_name
        self._requests = {}
        self._errors = {}
        self._latency = _Histogram(LATENCY_BUCKETS)
        self._batch = _Histogram(BATCH_BUCKETS)
        self.in_flight = 0

    def started(self):
        with self._lock:
            self.in_flight += 1

    def finished(self, route, status, seconds, error_kind=None):
        with self._lock:
            self.in_flight -= 1
            key = (route, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            if error_kind:
                self._errors[error_kind] = self._errors.get(error_kind, 0) + 1
            self._latency.observe(seconds)

    def batch(self, rows):
        with self._lock:
            self._batch.observe(rows)

    def render(self, extra=()):
        """The text exposition; `extra`: more lines (the model monitor's) before the process's own."""
        with self._lock:
            lines = ["# TYPE mdbuild_requests_total counter"]
            lines += [f'mdbuild_requests_total{{model="{self._model}",route="{route}",code="{code}"}} {count}'
                      for (route, code), count in sorted(self._requests.items())]
            lines += ["# TYPE mdbuild_request_errors_total counter"]
            lines += [f'mdbuild_request_errors_total{{model="{self._model}",kind="{kind}"}} {count}'
                      for kind, count in sorted(self._errors.items())]
            lines += self._latency.lines("mdbuild_request_duration_seconds", f'model="{self._model}"')
            lines += self._batch.lines("mdbuild_batch_size", f'model="{self._model}"')
            lines += ["# TYPE mdbuild_requests_in_flight gauge", f"mdbuild_requests_in_flight {self.in_flight}"]
        lines += extra
        lines += ["# TYPE process_cpu_seconds_total counter", f"process_cpu_seconds_total {time.process_time()}",
                  "# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {resident_bytes()}"]
        return "\n".join(lines) + "\n"


def resident_bytes():
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
