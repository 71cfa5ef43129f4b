"""The HTTP service of `edgecnn serve` and `app.pyz --serve`: a Starlette app over the runtime's Classifier.

    app = create_app(clf, ServeOptions(max_batch=16, token="s3cret"))     # an ASGI app (tests, other servers)
    serve(clf, ServeOptions(host="127.0.0.1", port=8080))                 # uvicorn until SIGTERM/Ctrl-C

Routes are small functions over the same calls `classify images` makes (preprocess, predict_pixels,
decode, output.result_dict). Decoding runs in a thread pool, inference in one batching thread
(batcher.py): the event loop only moves bytes. Every error is JSON ``{"error": ...}`` with its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

try:  # the form parser Starlette uses; imported here so that a missing one stops the start-up, not a request
    import python_multipart  # noqa: F401
except ImportError:  # python-multipart < 0.0.13
    import multipart  # noqa: F401
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from .. import output as fmt
from ..decode import AMBIGUOUS_MARGIN, DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN, VERDICTS
from ..preprocess import ImageError
from .batcher import Batcher
from .metrics import Metrics

log = logging.getLogger("edgecnn.serve")

MB = 1 << 20
PUBLIC_PATHS = frozenset({"/", "/healthz"})  # open without the token: the page asks for it, probes need none
ROUTES = ("/", "/healthz", "/metrics", "/v1/model", "/v1/classify", "/v1/camera", "/v1/camera/events",
          "/v1/camera/snapshot")  # metric labels; anything else counts as "other"
DRAIN_FACTOR = 4  # an over-long body up to this many times the limit is read (and dropped) before the error
DRAIN_SECONDS = 5.0  # ... for at most this long: then the connection is closed instead
GRACE_SECONDS = 30  # SIGTERM: in-flight requests get this long to finish before they are cancelled
# Inference threads unless told otherwise: one, which onnxruntime runs without spin-waiting. Batching keeps
# it busy, and the other cores decode images; with 2+ threads onnxruntime spins between runs, which cost
# CPU the decoders need (benchmarks/serve_load.py measures the server's CPU per request both ways).
DEFAULT_THREADS = 1
DEFAULT_TOP_K = 5  # classes per answer, as `classify images`
RETRY_AFTER_S = 1  # the Retry-After of a 503 (the queue drains in milliseconds to seconds)
_OK_TYPES = ("image/", "application/octet-stream", "multipart/form-data")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_BODY_READ = "edgecnn.body_read"  # scope key: the whole body has been received (nothing left to drain)


@dataclass(frozen=True)
class ServeOptions:
    """What `serve` is told on its command line (model loading aside)."""

    host: str = "127.0.0.1"  # 0.0.0.0 makes it reachable from the network (use a token)
    port: int = 8080  # 0 picks a free port (printed at start-up)
    max_batch: int = 16  # images per session.run; 1 turns micro-batching off
    max_wait_ms: float = 2.0  # how long a batch waits for requests that are still being decoded
    max_body_mb: float = 10.0  # larger request bodies get 413
    max_queue: int = 64  # classify requests held at once (reading, decoding, batching); more get 503
    token: str | None = None  # when set, all but / and /healthz need "Authorization: Bearer TOKEN"
    camera: str | None = None  # frame source of the live view (camera index, video file, URL, picamera)
    decode_threads: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))  # image decoders

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.decode_threads < 1:
            raise ValueError("max_batch, max_queue and decode_threads must be >= 1")
        if self.max_wait_ms < 0 or self.max_body_mb <= 0:
            raise ValueError(f"max_wait_ms must be >= 0 and max_body_mb > 0, got {self.max_wait_ms} and {self.max_body_mb}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port}: give 0..65535")

    @property
    def max_body(self) -> int:
        return int(self.max_body_mb * MB)


class ServeError(RuntimeError):
    """The server cannot start (port in use, bad host); the message names the value and the fix."""


class _Reject(Exception):
    """Answer the request with this status and JSON error."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _Disconnected(Exception):
    """The client went away while sending its body."""


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
        """Bytes -> the model's (size, size, 3) pixels, in a pool thread; bad input raises _Reject(400)."""
        try:
            return self.clf.preprocess(body)
        except ImageError as exc:
            raise _Reject(400, str(exc)) from None
        except (MemoryError, Image.DecompressionBombWarning) as exc:
            raise _Reject(400, f"{len(body)} bytes: refused, too large to decode ({type(exc).__name__})") from None
        except Exception as exc:  # a decoder's own error on hostile bytes: still the input's fault, never a 500
            log.warning("decoding %d bytes failed: %r", len(body), exc)
            raise _Reject(400, f"{len(body)} bytes: unreadable image ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        if self.camera is not None:
            self.camera.close()
        self.batcher.close()
        self.pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------------ routes
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
    query = _query(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and not media.startswith(_OK_TYPES):
        raise _Reject(415, f"content type {media!r} is not an image: send the image's bytes as image/* or "
                           "application/octet-stream (curl -H 'Content-Type: image/jpeg' --data-binary @photo.jpg), "
                           "or as the multipart field 'file' (curl -F file=@photo.jpg)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _Reject(413, f"body of {declared} bytes is over the limit of {limit} bytes (--max-body-mb "
                           f"{svc.options.max_body_mb:g})")
    if svc.held >= svc.options.max_queue:
        svc.metrics.rejected.inc()
        raise _Reject(503, f"busy: {svc.held} requests queued (--max-queue {svc.options.max_queue}); retry shortly",
                      {"Retry-After": str(RETRY_AFTER_S)})
    svc.held += 1
    svc.metrics.queue_depth.set(svc.held)
    announced = False
    try:
        body = await _read_body(request, limit)
        if media == "multipart/form-data":
            body = await _multipart_file(request, body)
        if not body:
            raise _Reject(400, "empty body: send the image's bytes (curl --data-binary @photo.jpg "
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
    prediction = svc.clf.decode(probs, **query)
    result = fmt.result_dict("", prediction)
    del result["path"]
    return JSONResponse(result)


async def camera_status(request: Request) -> Response:
    return JSONResponse(_camera(request).status())


async def camera_snapshot(request: Request) -> Response:
    feed = _camera(request)
    if feed.latest_jpeg is None:
        raise _Reject(503, f"no frame from {feed.description} yet" + (f": {feed.error}" if feed.error else ""),
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


# ----------------------------------------------------------------------------------------------- the app
def create_app(clf: Any, options: ServeOptions | None = None, *, camera: Any = None, load_seconds: float = 0.0) -> Any:
    """The ASGI app for ``clf`` (a runtime Classifier); ``camera`` is a camera.CameraFeed or None.

    The app owns a decode pool, a batching thread and a metrics registry; they stop with the app's
    lifespan (or ``app.state.service.close()``). A server other than serve()'s should set
    ``app.state.service.stopping`` (a callable, True once it shuts down) so that live-view streams end.
    """
    options = options or ServeOptions()
    svc = Service(clf, options, camera=camera, load_seconds=load_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, svc.close)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/model", model, methods=["GET"]),
        Route("/v1/classify", classify, methods=["POST"]),
        Route("/v1/camera", camera_status, methods=["GET"]),
        Route("/v1/camera/events", camera_events, methods=["GET"]),
        Route("/v1/camera/snapshot", camera_snapshot, methods=["GET"]),
    ]
    async def on_reject(request: Request, exc: Exception) -> Response:
        return await _rejection(request, exc, svc)

    handlers: dict[Any, Callable[..., Awaitable[Response]]] = {
        _Reject: on_reject, HTTPException: _on_http_error, _Disconnected: _on_disconnect, Exception: _on_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.service = svc
    return _Guard(app, svc)


class _Guard:
    """Outermost layer: the token check, and every response counted and timed (whatever answered it)."""

    def __init__(self, app: Starlette, service: Service):
        self.app = app
        self.service = service
        self.state = app.state  # tests and serve() reach the service as app.state.service
        token = service.options.token
        self._token = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self._token is not None and scope["path"] not in PUBLIC_PATHS and not self._authorized(scope):
                denied = _Reject(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN' "
                                      "(the --token value)", {"WWW-Authenticate": 'Bearer realm="edgecnn"'})
                response = await _rejection(Request(scope, receive), denied, self.service)
                await response(scope, receive, counting_send)
            else:
                await self.app(scope, receive, counting_send)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            self.service.metrics.observe(route, status, time.perf_counter() - start)

    def _authorized(self, scope: Scope) -> bool:
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, self._token or b"")  # constant time: the token is not guessed byte by byte


def _service(request: Request) -> Service:
    return request.app.state.service


def _camera(request: Request) -> Any:
    feed = _service(request).camera
    if feed is None:
        raise _Reject(404, "no camera: start the server with --camera SOURCE (a camera index, video file or URL)")
    return feed


def _query(request: Request) -> dict[str, Any]:
    """?top_k=N&min_confidence=P&min_margin=M, checked; absent ones take `classify images`' defaults."""
    params = request.query_params
    out: dict[str, Any] = {"top_k": DEFAULT_TOP_K, "min_confidence": DEFAULT_MIN_CONFIDENCE,
                           "min_margin": DEFAULT_MIN_MARGIN}
    if "top_k" in params:
        text = params["top_k"]
        if not text.isdigit() or int(text) < 1:
            raise _Reject(400, f"top_k={text!r}: give an integer >= 1")
        out["top_k"] = int(text)
    for name in ("min_confidence", "min_margin"):
        if name in params:
            try:
                value = float(params[name])
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 1.0:
                raise _Reject(400, f"{name}={params[name]!r}: give a number between 0 and 1")
            out[name] = value
    return out


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (a chunked body has no length to check first)."""
    body = bytearray()
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            request.scope[_BODY_READ] = True
        if len(body) > limit:
            raise _Reject(413, f"body over the limit of {limit} bytes (--max-body-mb {limit / MB:g})")
        if request.scope.get(_BODY_READ):
            return bytes(body)


async def _multipart_file(request: Request, body: bytes) -> bytes:
    """The ``file`` field of a multipart body already read (and size-checked) into memory."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except MultiPartException as exc:
        raise _Reject(400, f"unreadable multipart body ({exc.message})") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _Reject(400, "the multipart body has no file field named 'file' (curl -F file=@photo.jpg)")
        part_type = (upload.content_type or "").split(";")[0].strip().lower()
        if part_type and not part_type.startswith(("image/", "application/octet-stream")):
            raise _Reject(415, f"the uploaded file is {part_type!r}, not an image")
        return await upload.read()
    finally:
        await form.close()


async def _drain(request: Request, limit: int) -> bool:
    """Read and drop what is left of the body, up to ``limit`` bytes; True when all of it was read.

    A server that answers before reading the body and then closes makes the kernel reset the
    connection, and the client may never see the answer; draining a modest excess avoids that.
    """
    seen = 0
    deadline = time.monotonic() + DRAIN_SECONDS
    try:
        while seen <= limit:
            message = await asyncio.wait_for(request.receive(), max(0.01, deadline - time.monotonic()))
            if message["type"] == "http.disconnect":
                return False
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
    except (asyncio.TimeoutError, RuntimeError):
        return False
    return False


async def _rejection(request: Request, exc: Exception, svc: Service) -> Response:
    assert isinstance(exc, _Reject)
    headers = dict(exc.headers)
    if request.method in ("POST", "PUT", "PATCH") and not request.scope.get(_BODY_READ):
        limit = DRAIN_FACTOR * svc.options.max_body
        declared = request.headers.get("content-length", "")
        small = not declared.isdigit() or int(declared) <= limit
        if not (small and await _drain(request, limit)):
            headers["Connection"] = "close"  # the rest of the body is unread: this connection cannot go on
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no such endpoint: {request.method} {request.url.path}",
               405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _on_disconnect(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "client disconnected"}, status_code=400)  # nobody reads it; counted as a 400


async def _on_error(request: Request, exc: Exception) -> Response:
    """A server fault (the model failed): JSON for the client; Starlette re-raises it, so uvicorn logs the traceback."""
    text = str(exc).strip().splitlines()
    return JSONResponse({"error": f"internal error: {text[0] if text else type(exc).__name__}"}, status_code=500)


# -------------------------------------------------------------------------------------------- page, card
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
    import json

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


# ---------------------------------------------------------------------------------------------- serving
def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a ServeError that says what to change."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = "choose another --port" if exc.errno in (98, 48) else "check --host and --port"
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); {hint}") from None
    sock.set_inheritable(True)
    return sock


def serve(clf: Any, options: ServeOptions, *, load_seconds: float = 0.0,
          echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> int:
    """Serve ``clf`` until SIGTERM or Ctrl-C; returns the exit code (0 after a graceful stop).

    SIGTERM (systemd's stop) lets requests in flight finish (up to GRACE_SECONDS) and exits 0.
    Raises ServeError or sources.CameraError (with a one-line message) when it cannot start.
    """
    import uvicorn

    from .camera import CameraFeed

    sock = bind(options.host, options.port)
    feed = None
    try:
        feed = CameraFeed(clf, options.camera) if options.camera else None
        app = create_app(clf, options, camera=feed, load_seconds=load_seconds)
    except BaseException:
        sock.close()
        if feed is not None:
            feed.close()
        raise
    # A pixel count between Pillow's warning and its error threshold would still be decoded (gigabytes of RAM
    # in the worst case); a server refuses it, as it refuses the larger bombs.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=GRACE_SECONDS, lifespan="on",
                            server_header=False)
    server = uvicorn.Server(config)
    app.state.service.stopping = lambda: server.should_exit
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if options.host not in _LOOPBACK and not options.token:
        echo(f"warning: --host {options.host} lets anyone who can reach this machine use the model; add --token SECRET")
    info = clf.describe()
    echo(f"serving {info['model']} ({info['precision']}, {info['classes']} classes) on http://{shown}:{port}/"
         + (f" with the live view of {feed.description}" if feed else ""))
    # uvicorn handles SIGTERM itself, then re-raises it once its graceful shutdown is done; with this
    # handler in place that second delivery is a no-op and the process exits 0, as systemd expects.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    return 0 if server.started else 1
