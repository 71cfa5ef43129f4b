"""The ASGI app of `edgecnn serve` and `app.pyz --serve`: the routes, the error handlers and the token/metrics guard.

    app = create_app(clf, ServeOptions(max_batch=16, token="s3cret"))     # an ASGI app (tests, other servers)
    serve(clf, ServeOptions(host="127.0.0.1", port=8080))                 # server.py: uvicorn until SIGTERM/Ctrl-C

The routes (routes.py) run over the runtime's Classifier; options.py holds ServeOptions, request.py the
body, query and error handling. Every error is JSON ``{"error": ...}`` with its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .options import ServeOptions
from .request import Disconnected, Reject, on_disconnect, on_error, on_http_error, rejection
from .routes import ROUTES, Service, route_table

PUBLIC_PATHS = frozenset({"/", "/healthz"})  # open without the token: the page asks for it, probes need none


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

    async def on_reject(request: Request, exc: Exception) -> Response:
        return await rejection(request, exc, svc.options.max_body)

    handlers: dict[Any, Callable[..., Awaitable[Response]]] = {
        Reject: on_reject, HTTPException: on_http_error, Disconnected: on_disconnect, Exception: on_error,
    }
    app = Starlette(routes=route_table(), exception_handlers=handlers, lifespan=lifespan)
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
                denied = Reject(401, "missing or wrong token: send the header 'Authorization: Bearer TOKEN' "
                                     "(the --token value)", {"WWW-Authenticate": 'Bearer realm="edgecnn"'})
                response = await rejection(Request(scope, receive), denied, self.service.options.max_body)
                await response(scope, receive, counting_send)
            else:
                await self.app(scope, receive, counting_send)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            self.service.metrics.observe(route, status, time.perf_counter() - start)

    def _authorized(self, scope: Scope) -> bool:
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, self._token or b"")  # constant time: the token is not guessed byte by byte
