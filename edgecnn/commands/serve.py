"""`edgecnn serve`: an ONNX classifier over HTTP (JSON API, Prometheus metrics, a page with a live camera view).

Needs the serve extra (starlette, uvicorn, prometheus-client, python-multipart); --camera also needs
OpenCV or picamera2. The server itself is runtime/serve, shared with the deploy bundle's `app.pyz --serve`.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from .classify import DEFAULT_MODEL, load_classifier


@click.command("serve")
@click.option("-m", "--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"ONNX model. [default: {DEFAULT_MODEL}, made by `edgecnn demo`]")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 for every interface (then set --token).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port; 0 picks a free one.")
@click.option("--camera", "camera", default=None, metavar="0|FILE|URL|picamera",
              help="Add a live view of this camera index, video file, stream URL or Raspberry Pi camera.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="onnxruntime execution provider; auto takes CUDA when available.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Inference threads. [default: 1, so that the other cores decode images]")
@click.option("--max-batch", type=click.IntRange(1), default=16, show_default=True,
              help="Images per model call; concurrent requests are batched together. 1 turns batching off.")
@click.option("--max-wait-ms", type=click.FloatRange(0), default=2.0, show_default=True,
              help="How long a batch waits for requests still being decoded.")
@click.option("--max-body-mb", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="Larger request bodies are refused with 413.")
@click.option("--max-queue", type=click.IntRange(1), default=64, show_default=True,
              help="Classify requests held at once; more are refused with 503 and Retry-After.")
@click.option("--token", default=None, envvar="EDGECNN_TOKEN", show_envvar=True,
              help="Require 'Authorization: Bearer TOKEN' on every endpoint but / and /healthz.")
def serve(model: Path | None, host: str, port: int, camera: str | None, device: str, threads: int | None,
          max_batch: int, max_wait_ms: float, max_body_mb: float, max_queue: int, token: str | None) -> None:
    """Serve a model over HTTP: POST an image, get the JSON line `classify images --json` prints.

    \b
    Endpoints:
      GET  /                 a page: drop an image, see its softmax bars; the live camera view
      POST /v1/classify      the image's bytes (image/*, octet-stream) or multipart field 'file'; ?top_k=N
      GET  /v1/model         labels, input size, precision, layout, metadata
      GET  /healthz          {"status": "ok"} once the model is loaded
      GET  /metrics          Prometheus: requests, latency, batch sizes, queue depth, model load time
      GET  /v1/camera/events server-sent events of the live view (with --camera)

    Errors are JSON {"error": ...}: 400 bad image, 401 token, 413 too large, 415 not an image type,
    503 queue full. SIGTERM lets requests in flight finish and exits 0.

    \b
    Examples:
      edgecnn serve                                    # the demo's model on http://127.0.0.1:8080/
      edgecnn serve -m model.int8.onnx --port 9000
      edgecnn serve --host 0.0.0.0 --token s3cret --camera 0
      curl -s --data-binary @cat.jpg -H 'Content-Type: image/jpeg' localhost:8080/v1/classify
      curl -s -F file=@cat.jpg 'localhost:8080/v1/classify?top_k=3'
    """
    from ..runtime.serve.options import DEFAULT_THREADS, ServeOptions
    from ..runtime.serve.server import serve as run_server
    from ..runtime.sources import CameraError

    options = ServeOptions(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms, max_body_mb=max_body_mb,
                           max_queue=max_queue, token=token or None, camera=camera)
    start = time.perf_counter()
    clf = load_classifier(model, device=device, threads=threads or DEFAULT_THREADS, labels=None, size=None, mean=None, std=None)
    load_seconds = time.perf_counter() - start
    try:
        code = run_server(clf, options, load_seconds=load_seconds, echo=lambda line: click.echo(line, err=True))
    except CameraError as exc:
        raise click.ClickException(str(exc)) from None
    if code:
        raise SystemExit(code)


__all__ = ["serve"]
