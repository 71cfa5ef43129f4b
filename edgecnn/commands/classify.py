"""`edgecnn classify images|camera`: run an ONNX classifier on files or on a camera/video stream.

Needs only the base install (onnxruntime, numpy, Pillow); `camera` also needs OpenCV or picamera2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..defaults import DEFAULT_DEMO_DIR
from ..runtime.policy import AMBIGUOUS_MARGIN, DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN
from .common import float_triple

# Where `edgecnn demo` writes its INT8 model; the default of -m.
DEFAULT_MODEL = Path(DEFAULT_DEMO_DIR) / "model.int8.onnx"


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by both subcommands: the model, where it runs, and how its answers are decoded."""
    options = [
        click.option("-m", "--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help=f"ONNX model. [default: {DEFAULT_MODEL}, made by `edgecnn demo`]"),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="onnxruntime execution provider; auto takes CUDA when available."),
        click.option("--threads", type=click.IntRange(1), default=None, help="Inference threads. [default: onnxruntime's]"),
        click.option("-k", "--top-k", type=click.IntRange(1), default=5, show_default=True, help="Classes per answer."),
        click.option("--min-confidence", type=click.FloatRange(0, 1), default=DEFAULT_MIN_CONFIDENCE, show_default=True,
                     help="Flag an answer as uncertain when its probability is below this."),
        click.option("--min-margin", type=click.FloatRange(0, 1), default=DEFAULT_MIN_MARGIN, show_default=True,
                     help="Flag an answer as uncertain when first minus second probability is below this "
                          f"(the report's bands: below {AMBIGUOUS_MARGIN} ambiguous, below this unsure)."),
        click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="Label file, one per line (models without edgecnn metadata)."),
        click.option("--size", type=click.IntRange(8), default=None, help="Input size (models without metadata)."),
        click.option("--mean", callback=float_triple, default=None, metavar="R,G,B", help="R,G,B mean on the 0..1 scale (models without metadata)."),
        click.option("--std", callback=float_triple, default=None, metavar="R,G,B", help="R,G,B std on the 0..1 scale (models without metadata)."),
        click.option("--json", "as_json", is_flag=True, help="One JSON object per line."),
        click.option("--reject-unknown", is_flag=True,
                     help="Label inputs that look like none of the classes `unknown` (the threshold stored in a "
                          "calibrated model; see `edgecnn calibrate`)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load_classifier(model: Path | None, *, device: str, threads: int | None, labels, size, mean, std):
    from ..runtime import Classifier

    if model is None:
        model = DEFAULT_MODEL
        if not model.is_file():
            raise click.ClickException(
                f"no model given and {model} does not exist; run `edgecnn demo` to make it, or pass -m MODEL.onnx"
            )
    clf = Classifier(model, device=device, threads=threads, labels=labels, size=size, mean=mean, std=std)
    info = clf.describe()
    click.echo(f"model {info['model']} ({info['precision']}, {info['input']}, {info['classes']} classes) on {info['device']}",
               err=True)
    return clf


@click.group("classify")
def classify() -> None:
    """Classify image files or a camera/video stream with an ONNX model.

    \b
    Examples:
      edgecnn classify images photo.jpg holiday/ --recursive
      edgecnn classify images 'shots/*.png' -m model.int8.onnx --json
      edgecnn classify camera --source 0 --show
      edgecnn classify camera --source clip.mp4 --max-frames 100 --json
    """


@classify.command("images", short_help="Classify image files, folders or globs.")
@click.argument("paths", nargs=-1, required=True)
@model_options
@click.option("-r", "--recursive", is_flag=True, help="Descend into subfolders (and let ** match in globs).")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True, help="Images per model call.")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True, help="Threads decoding images.")
def images(paths: tuple[str, ...], model: Path | None, device: str, threads: int | None, top_k: int, min_confidence: float,
           min_margin: float, labels: Path | None, size: int | None, mean, std, as_json: bool, reject_unknown: bool,
           recursive: bool,
           batch_size: int, workers: int) -> None:
    """Classify image files: PATHS are files, folders (their images; subfolders with -r) or globs.

    Prints one line per file: the top label, its probability, the margin over the second class and the
    runners-up; UNCERTAIN marks answers below --min-confidence or --min-margin. A file that cannot be
    read gets an error line and the rest go on; the exit code is 1 if any file failed.

    \b
    Examples:
      edgecnn classify images cat.jpg dog.png
      edgecnn classify images photos/ -r --json > results.jsonl
      edgecnn classify images 'data/**/*.jpg' -r --min-confidence 0.6 --min-margin 0.2
      edgecnn classify images x.jpg -m resnet.onnx --labels imagenet.txt --size 224 \\
          --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
    """
    from ..runtime.files import classify_files

    clf = load_classifier(model, device=device, threads=threads, labels=labels, size=size, mean=mean, std=std)
    code = classify_files(clf, paths, out=click.echo, err=lambda line: click.echo(line, err=True), recursive=recursive,
                          batch_size=batch_size, workers=workers, top_k=top_k, min_confidence=min_confidence,
                          min_margin=min_margin, as_json=as_json, reject_unknown=reject_unknown)
    if code:
        raise SystemExit(code)


@classify.command("camera", short_help="Classify a camera, video file or stream, frame by frame.")
@model_options
@click.option("-s", "--source", default="0", show_default=True, metavar="0|FILE|URL|picamera",
              help="Camera index, video file, stream URL, or 'picamera' (Raspberry Pi camera via picamera2).")
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Stop after classifying this many frames.")
@click.option("--every", type=click.IntRange(1), default=1, show_default=True, help="Classify every N-th frame.")
@click.option("--show", is_flag=True, help="Open a window with the label, probability and FPS drawn on the frame.")
def camera(model: Path | None, device: str, threads: int | None, top_k: int, min_confidence: float, min_margin: float,
           labels: Path | None, size: int | None, mean, std, as_json: bool, reject_unknown: bool, source: str,
           max_frames: int | None,
           every: int, show: bool) -> None:
    """Classify frames from a camera, a video file or a stream, printing the top answer and FPS per frame.

    Ctrl-C (or q in the --show window) stops with a summary: frames, mean FPS and mean latency. A camera
    that cannot be opened or disconnects ends with a message and exit code 1.

    \b
    Examples:
      edgecnn classify camera                           # camera 0, the demo's INT8 model
      edgecnn classify camera --source clip.mp4 --every 5 --json
      edgecnn classify camera --source rtsp://10.0.0.7/stream --show
      edgecnn classify camera --source picamera         # Raspberry Pi camera module
    """
    from ..runtime.stream import classify_stream

    clf = load_classifier(model, device=device, threads=threads, labels=labels, size=size, mean=mean, std=std)
    failure = classify_stream(clf, source, out=click.echo, err=lambda line: click.echo(line, err=True), every=every,
                              max_frames=max_frames, top_k=top_k, min_confidence=min_confidence,
                              min_margin=min_margin, as_json=as_json, show=show, reject_unknown=reject_unknown)
    if failure:
        raise click.ClickException(failure)


__all__ = ["DEFAULT_MODEL", "camera", "classify", "images"]
