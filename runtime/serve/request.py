"""The request edge of the server: the body read under its limit, the multipart file, the query, and JSON errors.

Every refusal is a ``Reject(status, message)`` raised anywhere in a route; ``rejection`` turns it into
``{"error": message}`` with that status, after draining a modest unread body so the client sees it.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

try:  # the form parser Starlette uses; imported here so that a missing one stops the start-up, not a request
    import python_multipart  # noqa: F401
except ImportError:  # python-multipart < 0.0.13
    import multipart  # noqa: F401
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..decode import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN
from .options import MB

DRAIN_FACTOR = 4  # an over-long body up to this many times the limit is read (and dropped) before the error
DRAIN_SECONDS = 5.0  # ... for at most this long: then the connection is closed instead
DEFAULT_TOP_K = 5  # classes per answer, as `classify images`
_BODY_READ = "edgecnn.body_read"  # scope key: the whole body has been received (nothing left to drain)


class Reject(Exception):
    """Answer the request with this status and JSON error."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Disconnected(Exception):
    """The client went away while sending its body."""


def query(request: Request) -> dict[str, Any]:
    """?top_k=N&min_confidence=P&min_margin=M, checked; absent ones take `classify images`' defaults."""
    params = request.query_params
    out: dict[str, Any] = {"top_k": DEFAULT_TOP_K, "min_confidence": DEFAULT_MIN_CONFIDENCE,
                           "min_margin": DEFAULT_MIN_MARGIN}
    if "top_k" in params:
        text = params["top_k"]
        if not text.isdigit() or int(text) < 1:
            raise Reject(400, f"top_k={text!r}: give an integer >= 1")
        out["top_k"] = int(text)
    for name in ("min_confidence", "min_margin"):
        if name in params:
            try:
                value = float(params[name])
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 1.0:
                raise Reject(400, f"{name}={params[name]!r}: give a number between 0 and 1")
            out[name] = value
    return out


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (a chunked body has no length to check first)."""
    body = bytearray()
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise Disconnected()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            request.scope[_BODY_READ] = True
        if len(body) > limit:
            raise Reject(413, f"body over the limit of {limit} bytes (--max-body-mb {limit / MB:g})")
        if request.scope.get(_BODY_READ):
            return bytes(body)


async def multipart_file(request: Request, body: bytes) -> bytes:
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
        raise Reject(400, f"unreadable multipart body ({exc.message})") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Reject(400, "the multipart body has no file field named 'file' (curl -F file=@photo.jpg)")
        part_type = (upload.content_type or "").split(";")[0].strip().lower()
        if part_type and not part_type.startswith(("image/", "application/octet-stream")):
            raise Reject(415, f"the uploaded file is {part_type!r}, not an image")
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


async def rejection(request: Request, exc: Exception, max_body: int) -> Response:
    """The JSON answer to a Reject; a POST's unread body is drained first (up to DRAIN_FACTOR * ``max_body``)."""
    assert isinstance(exc, Reject)
    headers = dict(exc.headers)
    if request.method in ("POST", "PUT", "PATCH") and not request.scope.get(_BODY_READ):
        limit = DRAIN_FACTOR * max_body
        declared = request.headers.get("content-length", "")
        small = not declared.isdigit() or int(declared) <= limit
        if not (small and await _drain(request, limit)):
            headers["Connection"] = "close"  # the rest of the body is unread: this connection cannot go on
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no such endpoint: {request.method} {request.url.path}",
               405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def on_disconnect(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "client disconnected"}, status_code=400)  # nobody reads it; counted as a 400


async def on_error(request: Request, exc: Exception) -> Response:
    """A server fault (the model failed): JSON for the client; Starlette re-raises it, so uvicorn logs the traceback."""
    text = str(exc).strip().splitlines()
    return JSONResponse({"error": f"internal error: {text[0] if text else type(exc).__name__}"}, status_code=500)
