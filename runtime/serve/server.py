"""Server start-up: the listening socket, uvicorn until SIGTERM or Ctrl-C, and a graceful stop that exits 0.

    serve(clf, ServeOptions(host="127.0.0.1", port=8080))                 # uvicorn until SIGTERM/Ctrl-C
"""

from __future__ import annotations

import signal
import socket
import sys
import warnings
from collections.abc import Callable
from typing import Any

from PIL import Image

from .app import create_app
from .options import ServeOptions

GRACE_SECONDS = 30  # SIGTERM: in-flight requests get this long to finish before they are cancelled
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class ServeError(RuntimeError):
    """The server cannot start (port in use, bad host); the message names the value and the fix."""


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
