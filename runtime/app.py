"""The command line of a deploy bundle: `edgecnn classify` on the standard library's argparse, no click.

    python3 app.pyz photo.jpg photos/ --json             # model.onnx beside app.pyz
    python3 app.pyz --camera --source 0 --max-frames 100
    python -m edgecnn.runtime.app photo.jpg -m model.onnx

Same output (runtime/output.py), uncertainty flag, error lines and exit codes as `edgecnn classify`:
1 when a file, the model or the camera failed, 2 for a usage error, 130 on Ctrl-C in a batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from .policy import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN

MODEL_FILE = "model.onnx"  # what `edgecnn deploy` names the model beside app.pyz
_REQUIRED = {"numpy": "numpy", "PIL": "pillow", "onnxruntime": "onnxruntime"}  # import name -> pip name
_SERVE_REQUIRED = {"starlette": "starlette", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client",
                   "multipart": "python-multipart", "python_multipart": "python-multipart", "anyio": "anyio",
                   "h11": "h11", "click": "click"}  # --serve only: requirements-serve.txt

_EPILOG = """\
examples:
  python3 app.pyz photo.jpg dog.png
  python3 app.pyz photos/ -r --json > results.jsonl
  python3 app.pyz 'shots/*.jpg' --top-k 3 --min-confidence 0.6 --min-margin 0.2
  python3 app.pyz --camera                               # USB camera 0 (needs opencv-python-headless)
  python3 app.pyz --camera --source picamera --json      # Raspberry Pi camera module (picamera2)
  python3 app.pyz --camera --source clip.mp4 --max-frames 100
  python3 app.pyz --serve                                # HTTP on 127.0.0.1:8080 (needs requirements-serve.txt)
  python3 app.pyz --serve --host 0.0.0.0 --token s3cret --camera 0
"""


class _Fail(Exception):
    """An error that ends the program with one line on stderr and exit code 1."""


def bundle_dir() -> Path | None:
    """The folder holding app.pyz when running from one (this file is then app.pyz/<package>/app.py)."""
    archive = Path(__file__).resolve().parent.parent
    return archive.parent if archive.is_file() and zipfile.is_zipfile(archive) else None


def default_model() -> Path:
    folder = bundle_dir()
    if folder is None:
        raise _Fail("no model given; pass -m MODEL.onnx (the default, model.onnx beside app.pyz, applies only to a bundle)")
    model = folder / MODEL_FILE
    if not model.is_file():
        raise _Fail(f"{model} is missing; the bundle is incomplete (check it with sha256sum -c SHA256SUMS) or pass -m MODEL.onnx")
    return model


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give an integer >= 1")
    return value


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number between 0 and 1")
    return value


def _triple(text: str) -> tuple[float, float, float]:
    from .spec import parse_rgb

    try:
        return parse_rgb(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.pyz",
        description="Classify image files, or a camera/video stream with --camera, using the bundle's ONNX model. "
                    "Prints a table, or one JSON object per line with --json; UNCERTAIN marks answers below "
                    "--min-confidence or --min-margin. Exit code 1 if any file failed.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", metavar="IMAGE", help="Image files, folders (their images) or globs.")
    parser.add_argument("-m", "--model", type=Path, default=None, help="ONNX model. [default: model.onnx beside app.pyz]")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="onnxruntime execution provider; auto takes CUDA when available. [default: auto]")
    parser.add_argument("--threads", type=_positive_int, default=None, help="Inference threads. [default: onnxruntime's]")
    parser.add_argument("-k", "--top-k", type=_positive_int, default=5, help="Classes per answer. [default: 5]")
    parser.add_argument("--min-confidence", type=_unit_float, default=DEFAULT_MIN_CONFIDENCE,
                        help="Flag an answer as uncertain when its probability is below this. "
                             f"[default: {DEFAULT_MIN_CONFIDENCE}]")
    parser.add_argument("--min-margin", type=_unit_float, default=DEFAULT_MIN_MARGIN,
                        help="Flag an answer as uncertain when first minus second probability is below this. "
                             f"[default: {DEFAULT_MIN_MARGIN}]")
    parser.add_argument("--labels", type=Path, default=None, help="Label file, one per line (models without edgecnn metadata).")
    parser.add_argument("--size", type=_positive_int, default=None, help="Input size (models without metadata).")
    parser.add_argument("--mean", type=_triple, default=None, help="R,G,B mean on the 0..1 scale (models without metadata).")
    parser.add_argument("--std", type=_triple, default=None, help="R,G,B std on the 0..1 scale (models without metadata).")
    parser.add_argument("--json", dest="as_json", action="store_true", help="One JSON object per line.")
    parser.add_argument("--reject-unknown", action="store_true",
                        help="Label inputs that look like none of the classes `unknown` (threshold stored in the model).")
    files = parser.add_argument_group("image files")
    files.add_argument("-r", "--recursive", action="store_true", help="Descend into subfolders (and let ** match in globs).")
    files.add_argument("--batch-size", type=_positive_int, default=16, help="Images per model call. [default: 16]")
    files.add_argument("--workers", type=_positive_int, default=2, help="Threads decoding images. [default: 2]")
    camera = parser.add_argument_group("camera")
    camera.add_argument("--camera", nargs="?", const=True, default=False, metavar="SOURCE",
                        help="Classify frames from --source (or SOURCE) instead of files; with --serve, add a live view.")
    camera.add_argument("-s", "--source", default="0",
                        help="Camera index, video file, stream URL, or 'picamera' (Raspberry Pi camera). [default: 0]")
    camera.add_argument("--max-frames", type=_positive_int, default=None, help="Stop after classifying this many frames.")
    camera.add_argument("--every", type=_positive_int, default=1, help="Classify every N-th frame. [default: 1]")
    camera.add_argument("--show", action="store_true", help="Open a window with the label, probability and FPS drawn on.")
    serve = parser.add_argument_group("HTTP server (--serve; see README.md, \"Serve it\")")
    serve.add_argument("--serve", action="store_true", help="Serve the model over HTTP instead: JSON API, metrics, a page.")
    serve.add_argument("--host", default="127.0.0.1", help="Address to listen on; 0.0.0.0 for every interface. [default: 127.0.0.1]")
    serve.add_argument("--port", type=_port, default=8080, help="Port; 0 picks a free one. [default: 8080]")
    serve.add_argument("--max-batch", type=_positive_int, default=16, help="Images per model call. [default: 16]")
    serve.add_argument("--max-wait-ms", type=_non_negative, default=2.0,
                       help="How long a batch waits for requests still being decoded. [default: 2]")
    serve.add_argument("--max-body-mb", type=_positive_float, default=10.0, help="Larger bodies get 413. [default: 10]")
    serve.add_argument("--max-queue", type=_positive_int, default=64,
                       help="Classify requests held at once; more get 503. [default: 64]")
    serve.add_argument("--token", default=os.environ.get("EDGECNN_TOKEN") or None,
                       help="Require 'Authorization: Bearer TOKEN' (but on / and /healthz). [default: $EDGECNN_TOKEN]")
    return parser


def _port(text: str) -> int:
    value = _non_negative(text)
    if value != int(value) or value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: give a port number 0..65535")
    return int(value)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number >= 0")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number > 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.serve and args.paths:
        parser.error("--serve takes no IMAGE paths (POST images to /v1/classify)")
    if isinstance(args.camera, str):  # --camera SOURCE, as `edgecnn serve --camera SOURCE`
        args.source = args.camera
    if args.camera and args.paths:
        parser.error("give IMAGE paths or --camera, not both")
    if not args.camera and not args.paths and not args.serve:
        parser.error("give one or more IMAGE paths, or --camera, or --serve")
    try:
        if args.serve:
            return _serve(args)
        clf = _load(args)
        return _camera(clf, args) if args.camera else _images(clf, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `app.pyz ... | head`: the reader has what it wanted
        from .output import silence_stdout

        silence_stdout()
        return 0
    except ModuleNotFoundError as exc:
        package = _REQUIRED.get((exc.name or "").split(".")[0])
        if package is None and args.serve and (exc.name or "").split(".")[0] in _SERVE_REQUIRED:
            print(f"Error: --serve needs {_SERVE_REQUIRED[(exc.name or '').split('.')[0]]}, which is not installed: "
                  "venv/bin/pip install -r requirements-serve.txt (see README.md)", file=sys.stderr)
            return 1
        if package is None:
            raise
        print(f"Error: the Python package {package} is not installed; install the bundle's requirements: "
              "python3 -m venv venv && venv/bin/pip install -r requirements.txt, then run venv/bin/python app.pyz "
              "(see README.md)", file=sys.stderr)
        return 1
    except Exception as exc:  # the last line of defence: a message, not a traceback
        if os.environ.get("EDGECNN_DEBUG"):
            raise
        text = str(exc).strip()
        print(f"Error: {text.splitlines()[0] if text else type(exc).__name__}", file=sys.stderr)
        return 1


def _load(args: argparse.Namespace):
    from .classifier import Classifier

    model = args.model if args.model is not None else default_model()
    if args.labels is not None and not args.labels.is_file():
        raise _Fail(f"{args.labels}: no such label file")
    clf = Classifier(model, device=args.device, threads=args.threads, labels=args.labels, size=args.size,
                     mean=args.mean, std=args.std)
    info = clf.describe()
    print(f"model {info['model']} ({info['precision']}, {info['input']}, {info['classes']} classes) on {info['device']}",
          file=sys.stderr)
    return clf


def _images(clf, args: argparse.Namespace) -> int:
    from .files import classify_files

    return classify_files(clf, args.paths, out=lambda line: print(line, flush=True),
                          err=lambda line: print(line, file=sys.stderr), recursive=args.recursive,
                          batch_size=args.batch_size, workers=args.workers, top_k=args.top_k,
                          min_confidence=args.min_confidence, min_margin=args.min_margin, as_json=args.as_json,
                          reject_unknown=args.reject_unknown)


def _serve(args: argparse.Namespace) -> int:
    """The HTTP server of runtime/serve, as `edgecnn serve` runs it."""
    import time

    from .serve.options import DEFAULT_THREADS, ServeOptions
    from .serve.server import serve

    # The serve packages first: a missing one is reported before the model takes time to load.
    options = ServeOptions(host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                           max_body_mb=args.max_body_mb, max_queue=args.max_queue, token=args.token,
                           camera=args.source if args.camera else None)
    args.threads = args.threads or DEFAULT_THREADS  # not onnxruntime's default: see DEFAULT_THREADS
    start = time.perf_counter()
    clf = _load(args)
    return serve(clf, options, load_seconds=time.perf_counter() - start)


def _camera(clf, args: argparse.Namespace) -> int:
    from .stream import classify_stream

    failure = classify_stream(clf, args.source, out=lambda line: print(line, flush=True),
                              err=lambda line: print(line, file=sys.stderr), every=args.every,
                              max_frames=args.max_frames, top_k=args.top_k, min_confidence=args.min_confidence,
                              min_margin=args.min_margin, as_json=args.as_json, show=args.show,
                              reject_unknown=args.reject_unknown)
    if failure:
        print(f"Error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
