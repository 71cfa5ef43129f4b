"""The server's routes: small functions over the Service they share (classifier, decode pool, batcher, metrics).

They make the same calls as `classify images` (preprocess, predict_pixels, decode,
output.result_dict). Decoding runs in a thread pool, inference in one batching thread
(batcher.py): the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import output as fmt
from ..decode import AMBIGUOUS_MARGIN, DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN, VERDICTS
from ..preprocess import ImageError
from .batcher import Batcher
from .metrics import Metrics
from .options import ServeOptions
from .request import Reject, multipart_file, query, read_body

log = logging.getLogger("edgecnn.serve")

ROUTES = ("/", "/healthz", "/metrics", "/v1/model", "/v1/classify", "/v1/camera", "/v1/camera/events",
          "/v1/camera/snapshot")  # metric labels; anything else counts as "other"
RETRY_AFTER_S = 1  # the Retry-After of a 503 (the queue drains in milliseconds to seconds)
_OK_TYPES = ("image/", "application/octet-stream", "multipart/form-data")


class Service:
    """What the routes share: the classifier, the decode pool, the batcher, the metrics, the queue count."""

    def __init__(self, clf: Any, options: ServeOptions, *, camera: Any = None, load_seconds: float = 0.0):
        self.clf = clf
        self.options = options
        self.camera = camera
        self.metrics = Metrics(model_load_s=load_seconds)
        self.pool = ThreadPoolExecutor(max_workers=options.decode_threads, thread_name_prefix="edgecnn-decode")
        self.batcher = Batcher(clf.predict_pixels, max_batch=options.max_batch, max_wait_s=options.max_wait_ms / 1000.0,
                               on_batch=self.metrics.batch)
        self.held = 0  # classify requests admitted and not yet answered (only the event loop changes it)
        self.stopping: Callable[[], bool] = lambda: False  # set by serve(): True once shutdown has begun
        self.page = _page(clf, options)
        self.model_card = _model_card(clf)

    def decode(self, body: bytes) -> Any:
        """Bytes -> the model's (size, size, 3) pixels, in a pool thread; bad input raises Reject(400)."""
        try:
            return self.clf.preprocess(body)
        except ImageError as exc:
            raise Reject(400, str(exc)) from None
        except (MemoryError, Image.DecompressionBombWarning) as exc:
            raise Reject(400, f"{len(body)} bytes: refused, too large to decode ({type(exc).__name__})") from None
        except Exception as exc:  # a decoder's own error on hostile bytes: still the input's fault, never a 500
            log.warning("decoding %d bytes failed: %r", len(body), exc)
            raise Reject(400, f"{len(body)} bytes: unreadable image ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        if self.camera is not None:
            self.camera.close()
        self.batcher.close()
        self.pool.shutdown(wait=True, cancel_futures=True)


async def page(request: Request) -> Response:
    return HTMLResponse(_service(request).page)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def model(request: Request) -> Response:
    return JSONResponse(_service(request).model_card)


async def metrics(request: Request) -> Response:
    body, content_type = _service(request).metrics.render()
    return Response(body, media_type=content_type)


async def classify(request: Request) -> Response:
    """POST an image (raw bytes, or multipart field ``file``) -> one line of `classify images --json`, less the path."""
    svc = _service(request)
    limit = svc.options.max_body
    asked = query(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and not media.startswith(_OK_TYPES):
        raise Reject(415, f"content type {media!r} is not an image: send the image's bytes as image/* or "
                          "application/octet-stream (curl -H 'Content-Type: image/jpeg' --data-binary @photo.jpg), "
                          "or as the multipart field 'file' (curl -F file=@photo.jpg)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Reject(413, f"body of {declared} bytes is over the limit of {limit} bytes (--max-body-mb "
                          f"{svc.options.max_body_mb:g})")
    if svc.held >= svc.options.max_queue:
        svc.metrics.rejected.inc()
        raise Reject(503, f"busy: {svc.held} requests queued (--max-queue {svc.options.max_queue}); retry shortly",
                     {"Retry-After": str(RETRY_AFTER_S)})
    svc.held += 1
    svc.metrics.queue_depth.set(svc.held)
    announced = False
    try:
        body = await read_body(request, limit)
        if media == "multipart/form-data":
            body = await multipart_file(request, body)
        if not body:
            raise Reject(400, "empty body: send the image's bytes (curl --data-binary @photo.jpg "
                              "-H 'Content-Type: image/jpeg') or the multipart field 'file'")
        svc.batcher.expect()
        announced = True
        pixels = await asyncio.get_running_loop().run_in_executor(svc.pool, svc.decode, body)
        del body
        future = svc.batcher.submit(pixels, expected=True)
        announced = False
        probs = await asyncio.wrap_future(future)
    finally:
        if announced:  # the image was bad (or the client left): the batch need not wait for it
            svc.batcher.withdraw()
        svc.held -= 1
        svc.metrics.queue_depth.set(svc.held)
    prediction = svc.clf.decode(probs, **asked)
    result = fmt.result_dict("", prediction)
    del result["path"]
    return JSONResponse(result)


async def camera_status(request: Request) -> Response:
    return JSONResponse(_camera(request).status())


async def camera_snapshot(request: Request) -> Response:
    feed = _camera(request)
    if feed.latest_jpeg is None:
        raise Reject(503, f"no frame from {feed.description} yet" + (f": {feed.error}" if feed.error else ""),
                     {"Retry-After": str(RETRY_AFTER_S)})
    latest = feed.latest or {}
    return Response(feed.latest_jpeg, media_type="image/jpeg",
                    headers={"X-Edgecnn-Label": str(latest.get("top", [{}])[0].get("label", "")),
                             "X-Edgecnn-Frame": str(latest.get("frame", "")), "Cache-Control": "no-store"})


async def camera_events(request: Request) -> Response:
    """Server-sent events: one ``frame`` event per classified frame (top classes, verdict, FPS, JPEG)."""
    svc = _service(request)
    feed = _camera(request)
    queue = feed.subscribe(asyncio.get_running_loop())

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            while not svc.stopping():
                try:
                    yield await asyncio.wait_for(queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    yield b": waiting for frames\n\n"  # a comment: keeps proxies from timing the stream out
        finally:
            feed.unsubscribe(queue)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def route_table() -> list[Route]:
    """Every endpoint, in the order of ROUTES."""
    return [
        Route("/", page, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/model", model, methods=["GET"]),
        Route("/v1/classify", classify, methods=["POST"]),
        Route("/v1/camera", camera_status, methods=["GET"]),
        Route("/v1/camera/events", camera_events, methods=["GET"]),
        Route("/v1/camera/snapshot", camera_snapshot, methods=["GET"]),
    ]


def _service(request: Request) -> Service:
    return request.app.state.service


def _camera(request: Request) -> Any:
    feed = _service(request).camera
    if feed is None:
        raise Reject(404, "no camera: start the server with --camera SOURCE (a camera index, video file or URL)")
    return feed


def _model_card(clf: Any) -> dict[str, Any]:
    path = Path(clf.path)
    return {
        "model": path.name,
        "labels": list(clf.labels),
        "classes": len(clf.labels),
        "input_size": clf.spec.size,
        "layout": clf.input_layout,
        "dtype": clf.input_dtype,
        "precision": clf.precision,
        "device": clf.device,
        "size_bytes": path.stat().st_size if path.is_file() else None,
        "metadata": dict(clf.metadata),
    }


def _page(clf: Any, options: ServeOptions) -> str:
    """page.html with its settings filled in: the verdict bands (runtime.decode's), camera on/off, token on/off."""
    settings = {
        "verdict": {"min_confidence": DEFAULT_MIN_CONFIDENCE, "min_margin": DEFAULT_MIN_MARGIN,
                    "ambiguous_margin": AMBIGUOUS_MARGIN, "names": list(VERDICTS)},
        "camera": options.camera is not None,
        "token": options.token is not None,
        "model": Path(clf.path).name,
    }
    html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    # "</" cannot end the script element from inside a JSON string.
    return html.replace("{/*SETTINGS*/}", json.dumps(settings).replace("</", "<\\/"))
