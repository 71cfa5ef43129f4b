"""The live view of `serve --camera`: frames classified in a background thread, pushed to every viewer.

    feed = CameraFeed(clf, "0")              # opens the source now: a wrong one fails at start-up
    queue = feed.subscribe(loop)             # an asyncio.Queue of server-sent events (bytes), newest only
    feed.close()

Frames come from runtime.sources (OpenCV or picamera2) and are classified by the runtime's
``classify_frames`` (its FPS and latency); each becomes one event with the top classes, the verdict and
a JPEG of the frame. A video file plays in a loop at the live rate; a camera that fails is reopened.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from .. import output as fmt
from ..decode import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN, verdict
from ..sources import CameraError, open_frames

log = logging.getLogger("edgecnn.serve")

LIVE_FPS = 30.0  # classification rate while someone watches (cameras rarely give more)
IDLE_FPS = 1.0  # rate with no viewer: the snapshot stays fresh without taking the CPU from requests
RETRY_S = 2.0  # wait before reopening a camera that failed
FRAME_WIDTH = 640  # frames are sent at most this wide
JPEG_QUALITY = 80


class CameraFeed:
    """One frame source, classified in a thread; the latest result and JPEG, and a queue per viewer."""

    def __init__(self, clf: Any, source: str, *, top_k: int = 3):
        self.clf = clf
        self.source = source
        self.top_k = top_k
        self._frames = open_frames(source)  # CameraError here: the caller reports it and does not start
        self.description = self._frames.describe()
        self.latest: dict[str, Any] | None = None  # the last frame's event, without its JPEG
        self.latest_jpeg: bytes | None = None
        self.error: str | None = None  # the last camera failure, cleared by the next good frame
        self.frames = 0  # frames classified since start-up
        self._times: deque[float] = deque(maxlen=30)  # when the last frames were published: the FPS shown
        self._viewers: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgecnn-camera", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------- viewers (event loop)
    def subscribe(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)  # a slow viewer skips frames, it never queues them
        with self._lock:
            self._viewers[queue] = loop
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._viewers.pop(queue, None)

    def status(self) -> dict[str, Any]:
        latest = self.latest or {}
        return {"source": self.description, "frames": self.frames, "fps": latest.get("fps", 0.0),
                "viewers": len(self._viewers), "error": self.error}

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------- the thread
    def _run(self) -> None:
        frames: Any = self._frames
        while not self._stop.is_set():
            try:
                for result in self.clf.classify_frames(self._paced(frames), top_k=self.top_k, bgr=frames.bgr,
                                                         min_confidence=DEFAULT_MIN_CONFIDENCE,
                                                         min_margin=DEFAULT_MIN_MARGIN):
                    self._publish_frame(result)
            except CameraError as exc:
                self._publish_error(str(exc))
            except Exception as exc:  # inference failed: show it on the page, keep serving the API
                log.exception("camera frame failed")
                self._publish_error(f"classifying {self.description} failed: {exc}")
            finally:
                frames.close()
            if self._stop.wait(RETRY_S if self.error else 0.0):
                break
            try:  # a video file ended (play it again), or a camera failed (try again)
                frames = open_frames(self.source)
            except CameraError as exc:
                self._publish_error(str(exc))
                frames = _Closed()

    def _paced(self, frames: Any) -> Iterator[np.ndarray]:
        last = 0.0
        for frame in frames:
            if self._stop.is_set():
                return
            interval = 1.0 / (LIVE_FPS if self._viewers else IDLE_FPS)
            now = time.monotonic()
            if getattr(frames, "kind", "") == "file":
                # A file has no clock of its own: play it at the live rate, not as fast as it decodes.
                if self._stop.wait(max(0.0, last + interval - now)):
                    return
            elif now - last < interval:
                continue  # a camera runs at its own rate: skip the frames there is no time for
            last = time.monotonic()
            yield frame

    def _publish_frame(self, result: Any) -> None:
        pred = result.prediction
        event = fmt.frame_dict(result)
        # The rate viewers see, over the last frames and across the reopenings of a looping video file
        # (classify_frames counts from each opening, and its first frame has no rate yet).
        self._times.append(time.monotonic())
        span = self._times[-1] - self._times[0]
        event["fps"] = round((len(self._times) - 1) / span, 2) if span > 0 else 0.0
        event["frame"] = self.frames  # counted since start-up, not from the last reopening
        event["verdict"] = verdict(np.array([c.prob for c in pred.top], dtype=np.float32))  # top-2 decide it
        event["source"] = self.description
        jpeg = _jpeg(result.image, bgr=True)
        self.latest, self.latest_jpeg, self.error = event, jpeg, None
        self.frames += 1
        payload = {**event, "jpeg": base64.b64encode(jpeg).decode("ascii")}
        self._send(b"event: frame\ndata: " + json.dumps(payload).encode() + b"\n\n")

    def _publish_error(self, message: str) -> None:
        self.error = message
        log.warning("%s", message)
        self._send(b"event: error\ndata: " + json.dumps({"error": message}).encode() + b"\n\n")

    def _send(self, data: bytes) -> None:
        with self._lock:
            viewers = list(self._viewers.items())
        for queue, loop in viewers:
            try:
                loop.call_soon_threadsafe(_offer, queue, data)
            except RuntimeError:  # that viewer's loop is closed (server stopping)
                self.unsubscribe(queue)


class _Closed:
    """A source that could not be reopened: no frames, nothing to close."""

    bgr = True

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(())

    def close(self) -> None:
        pass


def _offer(queue: asyncio.Queue, item: bytes) -> None:
    """Put ``item``, dropping the one not yet taken: viewers get the newest frame."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


def _jpeg(frame: np.ndarray, *, bgr: bool) -> bytes:
    rgb = np.ascontiguousarray(frame[:, :, ::-1] if bgr else frame)
    image = Image.fromarray(rgb)
    if image.width > FRAME_WIDTH:
        image = image.resize((FRAME_WIDTH, max(1, round(image.height * FRAME_WIDTH / image.width))),
                             Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
