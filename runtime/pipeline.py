"""The streaming pipelines behind ``Classifier.classify_paths`` (files) and ``Classifier.classify_frames`` (video).

    for r in classify_paths(clf, paths, batch_size=16, workers=2): ...   # what clf.classify_paths runs

Files are decoded by worker threads while the model runs on the previous batch, in bounded memory and
input order; frames are classified one at a time with a running FPS.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from .policy import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN
from .preprocess import ImageError, preprocess
from .results import FileResult, FrameResult, StageTimes, StreamStats

if TYPE_CHECKING:
    from .classifier import Classifier


def classify_paths(
    clf: Classifier,
    paths: Iterable[str | os.PathLike],
    *,
    batch_size: int = 16,
    workers: int = 2,
    top_k: int = 5,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    min_margin: float = DEFAULT_MIN_MARGIN,
    timings: StageTimes | None = None,
    reject_unknown: bool = False,
) -> Generator[FileResult, None, None]:
    """Classify image files as a stream: results (or errors) in input order, memory bounded.

    ``workers`` threads decode and preprocess (Pillow releases the GIL) while the model runs on the
    previous batch; at most about two batches of decoded images exist at once, so a folder of any size
    runs in flat memory. ``timings`` (a StageTimes) is filled in as results are yielded.
    """
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    times = timings if timings is not None else StageTimes()
    lock = threading.Lock()
    spec = clf.spec

    def decode_one(path: str) -> np.ndarray | str:
        error = getattr(path, "error", None)  # sources.BadPath: a folder or pattern that gave no file
        if error:
            return str(error)
        start = time.perf_counter()
        try:
            return preprocess(path, spec)
        except ImageError as exc:
            return str(exc)
        except MemoryError:
            return f"{path}: too large to decode in memory"
        finally:
            elapsed = time.perf_counter() - start
            with lock:
                times.decode_s += elapsed

    limit = 2 * batch_size + workers  # decoded-or-decoding images held at once
    pending: deque[tuple[str, Future[np.ndarray | str]]] = deque()
    source = iter(paths)
    exhausted = False
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgecnn-decode") as pool:
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    path = item if isinstance(item, str) else os.fspath(item)
                    pending.append((path, pool.submit(decode_one, path)))
                if not pending:
                    break
                batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
                t0 = time.perf_counter()
                decoded = [(path, future.result()) for path, future in batch]
                t1 = time.perf_counter()
                good = [pixels for _, pixels in decoded if isinstance(pixels, np.ndarray)]
                probs, logits = (clf.predict_scores(np.stack(good), logits=reject_unknown) if good
                                 else (np.empty((0, len(clf.labels)), np.float32), None))
                t2 = time.perf_counter()
                results, row = [], 0
                for path, pixels in decoded:
                    if isinstance(pixels, np.ndarray):
                        pred = clf.decode(probs[row], top_k=top_k, min_confidence=min_confidence, min_margin=min_margin,
                                          logits=None if logits is None else logits[row], reject_unknown=reject_unknown)
                        results.append(FileResult(path, pred))
                        row += 1
                    else:
                        results.append(FileResult(path, error=pixels))
                t3 = time.perf_counter()
                times.wait_s += t1 - t0
                times.infer_s += t2 - t1
                times.post_s += t3 - t2
                times.batches += 1 if good else 0
                times.images += row
                times.failed += len(decoded) - row
                del decoded, good, probs
                yield from results
                times.wall_s = time.perf_counter() - start
        finally:
            for _, future in pending:  # stopped early (error, Ctrl-C, caller broke off): drop queued work
                future.cancel()


def classify_frames(
    clf: Classifier,
    frames: Iterable[np.ndarray],
    *,
    every: int = 1,
    max_frames: int | None = None,
    top_k: int = 1,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    min_margin: float = DEFAULT_MIN_MARGIN,
    bgr: bool = True,
    stats: StreamStats | None = None,
    reject_unknown: bool = False,
) -> Iterator[FrameResult]:
    """Classify every ``every``-th frame of a stream (OpenCV's BGR by default), at most ``max_frames`` of them."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    stats = stats if stats is not None else StreamStats()
    recent: deque[float] = deque(maxlen=30)
    start = None
    for index, image in enumerate(frames):
        now = time.perf_counter()
        start = now if start is None else start
        stats.frames_read += 1
        if index % every:
            continue
        pixels = preprocess(image, clf.spec, bgr=bgr)[None]
        probs, logits = clf.predict_scores(pixels, logits=reject_unknown)
        pred = clf.decode(probs[0], top_k=top_k, min_confidence=min_confidence, min_margin=min_margin,
                          logits=None if logits is None else logits[0], reject_unknown=reject_unknown)
        done = time.perf_counter()
        recent.append(done)
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 1.0 / max(done - now, 1e-9)
        stats.frames_classified += 1
        stats.latency_s += done - now
        stats.wall_s = done - start
        yield FrameResult(index, pred, fps, 1000.0 * (done - now), image)
        if max_frames is not None and stats.frames_classified >= max_frames:
            return


__all__ = ["classify_paths", "classify_frames"]
