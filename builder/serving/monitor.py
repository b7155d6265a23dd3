"""Model monitoring: how the live inputs and outputs compare with what the build verified.

The build summarizes each input and output tensor over its reference rows (the verification samples
and the evaluation set): the bins of its values' deciles and their shares, the range it saw and, for
class scores, the mean top-1 confidence and every class's share. The server bins each answered row
the same way into a rolling window of the last rows and exports, per tensor, the population
stability index (PSI) of the window against the reference (for class scores also of the predicted
classes' frequencies), rows with values outside the reference range or non-finite outputs, and the
confidence and top-class share of class outputs. A mask input is summarized by each row's length (its
real positions), and the inputs it masks by their real positions only: a client padding a batch of
sentences to one length sends the same data as one sending them one by one."""

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
FEATURE_BINS = 5  # per feature of a table: each bin holds more rows, so the many features' PSIs stay quiet
# A value this far outside the reference range (a share of its span) makes its row out of range. A
# table's columns get a wider margin: each is one value a row, with tails a few hundred reference rows
# have not reached (30 columns of lognormal data at 0.1 flagged 1 fresh row in 10); at 1 span a column
# tripled or a unit changed still is.
RANGE_MARGIN = 0.1
COLUMN_MARGIN = 1.0
# Requests waiting to be measured: each holds its arrays (a ResNet-50 request 0.6 MB).
PENDING = 16
_SMALLEST_SHARE = 1e-4  # an empty bin's share in PSI (ln 0 otherwise)
_PROBABILITY_SUM = 0.05  # how far from 1 a row of probabilities may sum (a quantized softmax rounds each class)


def describing(rows, mask, how):
    """Each row's values that describe the data (`how`: the tensor's entry in reference.json): the whole
    row, its length (a mask: how many real positions), or its real positions (an input a mask pads) as
    a list of 1-D arrays."""
    if how.get("statistic") == "length":
        return (rows != how["padding"]).sum(axis=1, keepdims=True)
    if mask is None:
        return rows
    return [row[keep != how["padding"]] for row, keep in zip(rows, mask.reshape(len(mask), -1))]


def sampled(rows, count):
    """Flat float64 values: each row's at a fixed stride over all of it, at most `count` of them."""
    if isinstance(rows, np.ndarray):
        return rows[:, :: max(1, -(-rows.shape[1] // count))].astype(np.float64).reshape(-1)
    return np.concatenate([row[:: max(1, -(-len(row) // count))] for row in rows] + [np.empty(0)]).astype(np.float64)


def span(rows):
    """(smallest, largest) finite value of all rows; (inf, -inf) where there is none."""
    values = [np.asarray(row, dtype=np.float64) for row in rows]
    finite = [row[np.isfinite(row)] for row in values]
    return min((float(row.min()) for row in finite if row.size), default=math.inf), \
        max((float(row.max()) for row in finite if row.size), default=-math.inf)


def outside(rows, low, high):
    """How many rows hold a value outside [low, high], or NaN (a row with no value holds none)."""
    with np.errstate(invalid="ignore"):
        if isinstance(rows, np.ndarray):
            return int(np.count_nonzero(~((rows.min(axis=1) >= low) & (rows.max(axis=1) <= high))))
        return sum(1 for row in rows if row.size and not (row.min() >= low and row.max() <= high))


def are_probabilities(scores):
    """Whether every row is already probabilities (non-negative, summing to 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    return bool(scores.min() >= 0 and np.abs(scores.sum(axis=1) - 1).max() <= _PROBABILITY_SUM)


def confidences(scores, probabilities):
    """(top-1 class, its probability) of each row: the row itself, or its softmax."""
    scores = np.asarray(scores, dtype=np.float64)
    top = scores.argmax(axis=1)
    if probabilities:
        return top, scores.max(axis=1)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return top, 1 / shifted.sum(axis=1)  # the top class's exp(0) over the sum


def summarize(arrays, masks, how):
    """The reference statistics of one tensor over `arrays` (batches of rows; `masks`: the batches of the
    mask that pads it, or Nones), described as `how` says (its keys are kept)."""
    described = [describing(np.asarray(a).reshape(len(a), -1), m, how) for a, m in zip(arrays, masks)]
    values = np.concatenate([sampled(rows, REFERENCE_VALUES) for rows in described])
    lows, highs = zip(*(span(rows) for rows in described))
    summary = {**how, "rows": sum(len(a) for a in arrays), **_bins(values[np.isfinite(values)], BINS)}
    if min(lows) > max(highs):  # no finite value at all: no range to hold rows to
        summary["range"] = False
    else:
        summary.update(low=min(lows), high=max(highs))
    if how.get("features"):  # a table's columns, each on its own scale: one shifted column shows
        table = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays])
        summary["features"] = [_feature(column[np.isfinite(column)]) for column in table.T]
    if how.get("classes"):
        scores = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays])
        probabilities = are_probabilities(scores)
        top, confidence = confidences(scores, probabilities)
        frequencies = np.bincount(top, minlength=scores.shape[1])
        summary.update(probabilities=probabilities, confidence=float(confidence.mean()),
                       top_class_share=float(frequencies.max() / len(top)), class_shares=(frequencies / len(top)).tolist())
    return summary


def _bins(values, bins):
    """The edges of the values' quantiles (repeated ones merged) and the share of values in each bin (one
    bin where there is no value)."""
    if not values.size:
        return {"edges": [], "shares": [1.0]}
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "shares": (counts / counts.sum()).tolist()}


def _feature(values):
    """One column of a table: its bins and, where it has values, its own range."""
    return {**_bins(values, FEATURE_BINS), **({"low": float(values.min()), "high": float(values.max())} if values.size else {})}


def _widened(low, high, margin=RANGE_MARGIN):
    width = high - low
    return low - margin * width, high + margin * width


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
        if "low" in reference:
            self.low, self.high = _widened(reference["low"], reference["high"])
        columns = reference.get("features", ())
        # A table is held to each column's own range (one range over columns of mixed scales would let a
        # column 1000x off pass); a column the reference never saw a value of is not checked.
        bounds = [_widened(f["low"], f["high"], COLUMN_MARGIN) if "low" in f else (-np.inf, np.inf) for f in columns]
        self.column_lows, self.column_highs = (np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds]))
        self.unchecked = np.array(["low" not in f for f in columns], dtype=bool)
        self.classes = "class_shares" in reference
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.features = [(np.asarray(f["edges"]), np.zeros(len(f["edges"]) + 1, dtype=np.int64))
                         for f in reference.get("features", ())]
        self.flagged_total = 0  # out-of-range input rows, or non-finite output rows, since the start
        self.confidence = 0.0
        self.tops = {}

    def measure(self, array, mask):
        """What a request adds: (bin counts, flagged rows, confidence sum, top classes, each feature's bin counts)."""
        rows = np.asarray(array).reshape(len(array), -1)
        described = describing(rows, mask, self.reference)
        values = sampled(described, LIVE_VALUES)
        counts = np.bincount(np.searchsorted(self.edges, values[np.isfinite(values)], side="right"),
                             minlength=len(self.edges) + 1)
        flagged = 0
        if self.kind == "output":
            flagged = len(rows) - int(np.count_nonzero(np.isfinite(rows).all(axis=1)))
        elif self.reference.get("range", True):
            flagged = self._outside_columns(rows) if self.features else outside(described, self.low, self.high)
        features = [np.bincount(np.searchsorted(edges, column[np.isfinite(column)], side="right"), minlength=len(edges) + 1)
                    for (edges, _), column in zip(self.features, rows.T)] if rows.shape[1] == len(self.features) else []
        if not self.classes or rows.shape[1] != len(self.reference["class_shares"]):
            return counts, flagged, 0.0, (), features
        top, confidence = confidences(np.nan_to_num(rows) if flagged else rows, self.reference["probabilities"])
        return counts, flagged, float(confidence.sum()), tuple(top.tolist()), features

    def _outside_columns(self, rows):
        """How many rows of a table hold a value outside its column's range, or NaN."""
        with np.errstate(invalid="ignore"):
            inside = (rows >= self.column_lows) & (rows <= self.column_highs) | self.unchecked
        return len(rows) - int(np.count_nonzero(inside.all(axis=1)))

    def add(self, measured, sign):
        counts, flagged, confidence, tops, features = measured
        self.counts += sign * counts
        for (_, window), added in zip(self.features, features):
            window += sign * added
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
                measured[kind, name] = tensor.measure(array, feeds.get(tensor.reference.get("masked_by")))
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

    def settle(self, timeout):
        """Waits, up to `timeout` seconds, until every request observed so far is measured."""
        with self._lock:
            observed = self._queued
            return self._done.wait_for(lambda: self._measured >= observed, timeout=timeout)

    def render(self):
        """Prometheus text-format lines: of every request observed before the scrape (a second at most)."""
        model = self._model
        lines = []
        self.settle(1.0)
        with self._lock:
            lines += _family("mdbuild_monitor_rows_total", "counter", [(f'model="{model}"', self._rows_total)])
            lines += _family("mdbuild_monitor_window_rows", "gauge", [(f'model="{model}"', self._rows)])
            lines += _family("mdbuild_monitor_dropped_rows_total", "counter", [(f'model="{model}"', self._dropped)])
            lines += _family("mdbuild_monitor_failed_requests_total", "counter", [(f'model="{model}"', self._failed)])
            drift, features, flagged, confidence, share, classes = [], [], {"input": [], "output": []}, [], [], []
            for (kind, name), tensor in self._tensors.items():
                labels = f'model="{model}",kind="{kind}",tensor="{name}"'
                if self._rows:
                    drift.append((labels, psi(tensor.counts, tensor.reference["shares"])))
                    features += [(f'model="{model}",tensor="{name}",feature="{index}"', psi(window, reference["shares"]))
                                 for index, ((_, window), reference) in enumerate(zip(tensor.features,
                                                                                      tensor.reference.get("features", ())))]
                if kind == "output" or tensor.reference.get("range", True):
                    flagged[kind].append((f'model="{model}",tensor="{name}"', tensor.flagged_total))
                if tensor.classes:
                    labels = f'model="{model}",tensor="{name}"'
                    rows = sum(tensor.tops.values())
                    if rows:
                        predicted = np.bincount(list(tensor.tops), weights=list(tensor.tops.values()),
                                                minlength=len(tensor.reference["class_shares"]))
                        drift.append((f'model="{model}",kind="class",tensor="{name}"',
                                      psi(predicted, tensor.reference["class_shares"])))
                    classes.append((labels, len(tensor.reference["class_shares"])))
                    confidence += [(labels + ',window="reference"', tensor.reference["confidence"])]
                    share += [(labels + ',window="reference"', tensor.reference["top_class_share"])]
                    if rows:
                        confidence.append((labels + ',window="live"', tensor.confidence / rows))
                        share.append((labels + ',window="live"', max(tensor.tops.values()) / rows))
        lines += _family("mdbuild_drift_psi", "gauge", drift)
        lines += _family("mdbuild_feature_drift_psi", "gauge", features)
        lines += _family("mdbuild_input_out_of_range_rows_total", "counter", flagged["input"])
        lines += _family("mdbuild_output_nonfinite_rows_total", "counter", flagged["output"])
        lines += _family("mdbuild_output_confidence_mean", "gauge", confidence)
        lines += _family("mdbuild_output_top_class_share", "gauge", share)
        lines += _family("mdbuild_output_classes", "gauge", classes)
        return lines


def _family(name, kind, samples):
    return [f"# TYPE {name} {kind}"] + [f"{name}{{{labels}}} {_number(value)}" for labels, value in samples]


def _number(value):
    return repr(float(value)) if math.isfinite(value) else ("+Inf" if value > 0 else "NaN")
