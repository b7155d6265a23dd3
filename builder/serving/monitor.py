"""Model monitoring: how the live inputs and outputs compare with what the build verified.

The build summarizes each input and output tensor over its reference rows (the verification samples
and the evaluation set): the bins of its values' deciles and their shares, the range it saw and, for
class scores, the mean top-1 confidence and the share of the most frequent class. The server bins each
answered row the same way into a rolling window of the last rows and exports, per tensor, the
population stability index (PSI) of the window against the reference (for class scores also of the
predicted classes' frequencies), rows with values outside the reference range or non-finite outputs,
and the confidence and top-class share of class outputs."""

from __future__ import annotations

import math
import queue
import threading
from collections import deque

import numpy as np

# Values of a row that enter the statistics: a fixed stride over the flattened row, so a request of
# 150k pixels costs what one of 256 does; the reference takes more of each row (it has few rows).
LIVE_VALUES = 256
REFERENCE_VALUES = 4096
BINS = 10
# A value this far outside the reference range (a share of its span) makes its row out of range.
RANGE_MARGIN = 0.1
PENDING = 64  # requests waiting to be measured (a ResNet-50 request holds 0.6 MB)
_SMALLEST_SHARE = 1e-4  # an empty bin's share in PSI (ln 0 otherwise)


def sampled(array, count):
    """(rows, k) float64: each row's values at a fixed stride, at most `count` of them."""
    flat = np.asarray(array).reshape(len(array), -1)
    stride = max(1, flat.shape[1] // count)
    return flat[:, ::stride][:, :count].astype(np.float64)


def confidences(scores):
    """(top-1 class, its probability) of each row; rows that are not probabilities go through softmax."""
    scores = np.asarray(scores, dtype=np.float64)
    top = scores.argmax(axis=1)
    if scores.min() >= 0 and np.abs(scores.sum(axis=1) - 1).max() <= 1e-3:
        return top, scores.max(axis=1)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return top, 1 / shifted.sum(axis=1)  # the top class's exp(0) over the sum


def summarize(arrays, class_scores):
    """The reference statistics of one tensor over `arrays` (batches of rows)."""
    values = np.concatenate([sampled(a, REFERENCE_VALUES).reshape(-1) for a in arrays])
    values = values[np.isfinite(values)]
    edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    rows = [np.asarray(a).reshape(len(a), -1) for a in arrays]
    summary = {"rows": sum(len(r) for r in rows), "edges": edges.tolist(), "shares": (counts / counts.sum()).tolist(),
               "low": float(min(np.nanmin(r) for r in rows)), "high": float(max(np.nanmax(r) for r in rows))}
    if class_scores:
        top, confidence = confidences(np.concatenate(rows))
        frequencies = np.bincount(top, minlength=rows[0].shape[1])
        summary["confidence"] = float(confidence.mean())
        summary["top_class_share"] = float(frequencies.max() / len(top))
        summary["class_shares"] = (frequencies / len(top)).tolist()
    return summary


def psi(counts, shares):
    """Population stability index of window counts against reference shares."""
    observed = np.maximum(counts / max(counts.sum(), 1), _SMALLEST_SHARE)
    expected = np.maximum(np.asarray(shares), _SMALLEST_SHARE)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


class _Tensor:
    """One tensor's rolling window: per request, its rows' bin counts and flags."""

    def __init__(self, reference, kind):
        self.reference = reference
        self.kind = kind
        self.edges = np.asarray(reference["edges"])
        span = reference["high"] - reference["low"]
        self.low = reference["low"] - RANGE_MARGIN * span
        self.high = reference["high"] + RANGE_MARGIN * span
        self.classes = "confidence" in reference
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.flagged_total = 0  # out-of-range input rows, or non-finite output rows, since the start
        self.confidence = 0.0
        self.tops = {}

    def measure(self, array):
        """What a request adds: (bin counts, flagged rows, confidence sum, top classes)."""
        rows = np.asarray(array).reshape(len(array), -1)
        values = sampled(rows, LIVE_VALUES)
        counts = np.bincount(np.searchsorted(self.edges, values[np.isfinite(values)], side="right"),
                             minlength=len(self.edges) + 1)
        if self.kind == "input":
            with np.errstate(invalid="ignore"):
                flagged = int(np.sum(~((rows.min(axis=1) >= self.low) & (rows.max(axis=1) <= self.high))))
        else:
            finite = np.isfinite(rows).all(axis=1)
            flagged = len(rows) - int(np.count_nonzero(finite))
        if not self.classes:
            return counts, flagged, 0.0, ()
        top, confidence = confidences(np.nan_to_num(rows) if flagged else rows)
        return counts, flagged, float(confidence.sum()), tuple(top.tolist())

    def add(self, measured, sign):
        counts, flagged, confidence, tops = measured
        self.counts += sign * counts
        self.confidence += sign * confidence
        for top in tops:
            self.tops[top] = self.tops.get(top, 0) + sign
            if not self.tops[top]:
                del self.tops[top]
        if sign > 0:
            self.flagged_total += flagged


class Monitor:
    """The live statistics of every input and output, over the last `window` rows."""

    def __init__(self, model_name, reference, window):
        self._lock = threading.Lock()
        self._model = model_name
        self._window = window
        self._tensors = {(kind, name): _Tensor(stats, kind)
                         for kind in ("input", "output") for name, stats in reference[kind + "s"].items()}
        self._requests = deque()  # (rows, {tensor: measured}) in arrival order
        self._rows = 0
        self._rows_total = 0
        self._dropped = 0
        self._failed = 0
        # Requests are measured on a thread of the monitor's own, off the request path; a request
        # arriving while PENDING are queued is counted as dropped instead of held.
        self._pending = queue.Queue(maxsize=PENDING)
        self._done = threading.Condition(self._lock)
        self._queued = self._measured = 0
        threading.Thread(target=self._work, name="monitor", daemon=True).start()

    def observe(self, feeds, outputs):
        """Takes one answered request (its arrays are not modified afterwards) and returns at once."""
        try:
            with self._lock:
                self._pending.put_nowait((feeds, outputs))
                self._queued += 1
        except queue.Full:
            with self._lock:
                self._dropped += len(next(iter(feeds.values())))

    def _work(self):
        while True:
            feeds, outputs = self._pending.get()
            try:
                self.record(feeds, outputs)
                failed = 0
            except Exception:  # arrays the statistics cannot take: counted; the thread must go on
                failed = 1
            with self._lock:
                self._measured += 1
                self._failed += failed
                self._done.notify_all()

    def record(self, feeds, outputs):
        """Measures one request into the window (the monitor thread's work)."""
        rows = len(next(iter(feeds.values())))
        measured = {}
        for (kind, name), tensor in self._tensors.items():
            array = (feeds if kind == "input" else outputs).get(name)
            if array is not None and len(array) == rows:
                measured[kind, name] = tensor.measure(array)
        with self._lock:
            self._requests.append((rows, measured))
            self._rows += rows
            self._rows_total += rows
            for key, values in measured.items():
                self._tensors[key].add(values, 1)
            while self._rows - self._requests[0][0] >= self._window:
                old_rows, old = self._requests.popleft()
                self._rows -= old_rows
                for key, values in old.items():
                    self._tensors[key].add(values, -1)

    def render(self):
        """Prometheus text-format lines."""
        model = self._model
        lines = []
        with self._lock:
            # What was observed before this scrape is in it (a second at most: under overload, later).
            observed = self._queued
            self._done.wait_for(lambda: self._measured >= observed, timeout=1.0)
            lines += _family("mdbuild_monitor_rows_total", "counter", [(f'model="{model}"', self._rows_total)])
            lines += _family("mdbuild_monitor_window_rows", "gauge", [(f'model="{model}"', self._rows)])
            lines += _family("mdbuild_monitor_dropped_rows_total", "counter", [(f'model="{model}"', self._dropped)])
            lines += _family("mdbuild_monitor_failed_requests_total", "counter", [(f'model="{model}"', self._failed)])
            drift, flagged, confidence, share = [], {"input": [], "output": []}, [], []
            for (kind, name), tensor in self._tensors.items():
                labels = f'model="{model}",kind="{kind}",tensor="{name}"'
                if self._rows:
                    drift.append((labels, psi(tensor.counts, tensor.reference["shares"])))
                flagged[kind].append((f'model="{model}",tensor="{name}"', tensor.flagged_total))
                if tensor.classes:
                    labels = f'model="{model}",tensor="{name}"'
                    rows = sum(tensor.tops.values())
                    if rows:
                        predicted = np.bincount(list(tensor.tops), weights=list(tensor.tops.values()),
                                                minlength=len(tensor.reference["class_shares"]))
                        drift.append((f'model="{model}",kind="class",tensor="{name}"',
                                      psi(predicted, tensor.reference["class_shares"])))
                    confidence += [(labels + ',window="reference"', tensor.reference["confidence"])]
                    share += [(labels + ',window="reference"', tensor.reference["top_class_share"])]
                    if rows:
                        confidence.append((labels + ',window="live"', tensor.confidence / rows))
                        share.append((labels + ',window="live"', max(tensor.tops.values()) / rows))
        lines += _family("mdbuild_drift_psi", "gauge", drift)
        lines += _family("mdbuild_input_out_of_range_rows_total", "counter", flagged["input"])
        lines += _family("mdbuild_output_nonfinite_rows_total", "counter", flagged["output"])
        lines += _family("mdbuild_output_confidence_mean", "gauge", confidence)
        lines += _family("mdbuild_output_top_class_share", "gauge", share)
        return lines


def _family(name, kind, samples):
    return [f"# TYPE {name} {kind}"] + [f"{name}{{{labels}}} {_number(value)}" for labels, value in samples]


def _number(value):
    return repr(float(value)) if math.isfinite(value) else ("+Inf" if value > 0 else "NaN")
