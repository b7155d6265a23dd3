"""Dynamic batching: requests that arrive within max_queue_delay of each other run as one batch
of up to max_batch_size rows (along the first dimension), then each gets its own rows back."""

import queue
import threading
import time

import numpy as np


class _Pending:
    def __init__(self, feeds):
        self.feeds = feeds
        self.rows = len(next(iter(feeds.values())))
        self.signature = tuple(sorted((name, value.shape[1:], value.dtype.str) for name, value in feeds.items()))
        self.done = threading.Event()
        self.result = None
        self.error = None
        self.queued = time.perf_counter_ns()
        self.queue_ns = 0  # from queued to the start of its batch
        self.infer_ns = 0  # the batch's run of the model


class Batcher:
    def __init__(self, run, max_batch_size, max_queue_delay_s, executed):
        """`executed(rows, input_ns, infer_ns, output_ns)` hears of every run of the model."""
        self._run = run
        self._max_rows = max_batch_size
        self._delay = max_queue_delay_s
        self._executed = executed
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    def run(self, feeds):
        """(the model's outputs for these inputs, computed within a batch; ns queued; ns the batch
        ran): blocks until done."""
        pending = _Pending(feeds)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result, pending.queue_ns, pending.infer_ns

    def close(self):
        self._queue.put(None)
        self._thread.join()

    def _loop(self):
        held = []  # requests that did not fit the last batch: they start the next one
        while True:
            first = held.pop(0) if held else self._queue.get()
            if first is None:
                return
            batch, rows = [first], first.rows
            deadline = time.monotonic() + self._delay
            while rows < self._max_rows:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None or item.signature != first.signature or rows + item.rows > self._max_rows:
                    held.append(item)
                    break
                batch.append(item)
                rows += item.rows
            self._execute(batch, rows)

    def _execute(self, batch, rows):
        began = time.perf_counter_ns()
        try:
            if len(batch) == 1:
                feeds = batch[0].feeds
            else:
                feeds = {name: np.concatenate([p.feeds[name] for p in batch]) for name in batch[0].feeds}
            joined = time.perf_counter_ns()
            outputs = self._run(feeds)
            ran = time.perf_counter_ns()
            start = 0
            for pending in batch:
                pending.queue_ns, pending.infer_ns = began - pending.queued, ran - joined
                pending.result = outputs if len(batch) == 1 else {
                    name: value[start:start + pending.rows] for name, value in outputs.items()}
                start += pending.rows
            self._executed(rows, joined - began, ran - joined, time.perf_counter_ns() - ran)
        except Exception as exc:  # the runtime's failure belongs to every request of the batch
            for pending in batch:
                pending.error = exc
        for pending in batch:
            pending.done.set()
