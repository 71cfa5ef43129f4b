"""Micro-batching: requests from many threads share one inference thread and one session.run per batch.

    batcher = Batcher(clf.predict_pixels, max_batch=16, max_wait_s=0.002)
    batcher.expect()                                   # a request is decoding and will submit soon
    probs = await asyncio.wrap_future(batcher.submit(pixels))    # (classes,) float32
    batcher.close()

Standard library and numpy only. The inference thread takes the first waiting request, then waits up to
``max_wait_s`` for more while some are still being decoded (``expect``), and runs them as one batch: under
load the batches fill up; a lone request is run at once instead of sitting out the wait.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np


@dataclass
class _Job:
    pixels: np.ndarray  # (size, size, 3) uint8
    future: Future


class Batcher:
    """One inference thread fed by a queue of preprocessed images; each submit gets a Future of its row."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 16, max_wait_s: float = 0.002,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch} and {max_wait_s}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._predict = predict
        self._on_batch = on_batch  # (batch size, seconds in predict), for the metrics
        self._jobs: deque[_Job] = deque()
        self._incoming = 0  # requests announced by expect() that have not submitted (or withdrawn) yet
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="edgecnn-infer", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Images queued for the next batch."""
        return len(self._jobs)

    def expect(self) -> None:
        """Announce a request that is decoding: the thread may wait (up to max_wait_s) to batch it."""
        with self._cond:
            self._incoming += 1

    def withdraw(self) -> None:
        """An announced request will not submit (its image was bad)."""
        with self._cond:
            self._incoming = max(0, self._incoming - 1)
            self._cond.notify()

    def submit(self, pixels: np.ndarray, *, expected: bool = False) -> Future:
        """Queue one image; the Future gets its (classes,) probabilities or the inference error.

        ``expected`` says the request was announced with expect() (it is no longer incoming).
        """
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if expected:
                self._incoming = max(0, self._incoming - 1)
            self._jobs.append(_Job(pixels, future))
            self._cond.notify()
        return future

    def close(self, timeout: float | None = 10.0) -> None:
        """Run what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _next_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait_s
            # Wait for more only while more are on their way: a lone request runs at once.
            while len(self._jobs) < self.max_batch and self._incoming > 0 and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return [self._jobs.popleft() for _ in range(min(self.max_batch, len(self._jobs)))]

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            # A request whose client went away was cancelled: no need to compute its answer.
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not live:
                continue
            start = time.perf_counter()
            try:
                probs = self._predict(np.stack([job.pixels for job in live]))
            except Exception as exc:  # handed to every waiting request: none is left hanging
                for job in live:
                    job.future.set_exception(exc)
                continue
            if self._on_batch is not None:
                self._on_batch(len(live), time.perf_counter() - start)
            for job, row in zip(live, probs, strict=True):
                job.future.set_result(row)
