"""The result formats of `edgecnn classify` and the deploy bundle's app, defined once. Standard library only.

    print(json_line(result_dict(r.path, r.prediction)))     # {"path": ..., "top": [...], "margin": ..., "uncertain": ...}
    print(json_line(error_dict(r.path, r.error)))           # {"path": ..., "error": "..."}
    print(table_header(width)); print(table_row(r.path, r.prediction, width=width))

JSON keys: a success has ``path``, ``top`` (list of ``label``, ``index``, ``prob``, most probable first),
``margin`` and ``uncertain``; a failure has ``path`` and ``error``. A camera frame has ``frame``, ``top``,
``margin``, ``uncertain``, ``fps`` and ``latency_ms``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

PROB_DIGITS = 6  # probabilities in JSON are rounded to this many decimals


def top_list(prediction: Any) -> list[dict[str, Any]]:
    return [{"label": c.label, "index": c.index, "prob": round(float(c.prob), PROB_DIGITS)} for c in prediction.top]


def result_dict(path: str, prediction: Any) -> dict[str, Any]:
    """A classified file: ``prediction`` is a classifier.Prediction (top, margin, uncertain)."""
    return {
        "path": str(path),
        "top": top_list(prediction),
        "margin": round(float(prediction.margin), PROB_DIGITS),
        "uncertain": bool(prediction.uncertain),
        **_unknown(prediction),
    }


def _unknown(prediction: Any) -> dict[str, bool]:
    """``{"unknown": bool}`` when rejection was asked for (classify --reject-unknown), else nothing."""
    unknown = getattr(prediction, "unknown", None)
    return {} if unknown is None else {"unknown": bool(unknown)}


def error_dict(path: str, error: str) -> dict[str, Any]:
    return {"path": str(path), "error": str(error)}


def frame_dict(result: Any) -> dict[str, Any]:
    """A classified camera/video frame: ``result`` is a classifier.FrameResult."""
    return {
        "frame": int(result.frame),
        "top": top_list(result.prediction),
        "margin": round(float(result.prediction.margin), PROB_DIGITS),
        "uncertain": bool(result.prediction.uncertain),
        **_unknown(result.prediction),
        "fps": round(float(result.fps), 2),
        "latency_ms": round(float(result.latency_ms), 3),
    }


def json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def table_header(width: int = 40) -> str:
    return f"{'path':<{width}}  {'label':<16} {'prob':>6} {'margin':>6}  next"


def table_row(path: str, prediction: Any, *, width: int = 40) -> str:
    """One readable line: path, top label, probability, margin, UNCERTAIN flag, then the runners-up."""
    first = prediction.top[0]
    rest = ", ".join(f"{c.label} {c.prob:.3f}" for c in prediction.top[1:])
    flag = "  UNCERTAIN" if prediction.uncertain else ""
    if getattr(prediction, "unknown", None):  # none of the classes: say so, and name the nearest one
        return f"{_fit(str(path), width):<{width}}  {'unknown':<16} {first.prob:>6.3f} {prediction.margin:>6.3f}  nearest {first.label}"
    return f"{_fit(str(path), width):<{width}}  {_fit(first.label, 16):<16} {first.prob:>6.3f} {prediction.margin:>6.3f}  {rest}{flag}"


def error_row(path: str, error: str, *, width: int = 40) -> str:
    return f"{_fit(str(path), width):<{width}}  ERROR {error}"


def frame_row(result: Any) -> str:
    pred = result.prediction
    flag = "  UNCERTAIN" if pred.uncertain else ""
    if getattr(pred, "unknown", None):
        flag = f"  nearest {pred.label}"
        return f"frame {result.frame:>6}  {'unknown':<16} {pred.prob:>6.3f}  {result.fps:>6.1f} fps  {result.latency_ms:>7.2f} ms{flag}"
    return f"frame {result.frame:>6}  {pred.label:<16} {pred.prob:>6.3f}  {result.fps:>6.1f} fps  {result.latency_ms:>7.2f} ms{flag}"


def caption(result: Any) -> str:
    """Text drawn on a --show window."""
    pred = result.prediction
    if getattr(pred, "unknown", None):
        return f"unknown (nearest {pred.label})  {result.fps:.1f} fps"
    return f"{pred.label} {pred.prob:.2f}{'?' if pred.uncertain else ''}  {result.fps:.1f} fps"


def summary_line(*, images: int, failed: int, seconds: float) -> str:
    rate = f", {images / seconds:.1f} images/s" if seconds > 0 and images else ""
    return f"{images} classified, {failed} failed in {seconds:.2f} s{rate}"


def stream_summary(stats: Any, source: str) -> str:
    return (f"{source}: {stats.frames_classified} frames classified ({stats.frames_read} read), "
            f"mean {stats.mean_fps:.1f} fps, mean latency {stats.mean_latency_ms:.2f} ms")


def human_bytes(n: int | float) -> str:
    """A file size in SI units (1 kB = 1000 bytes), the one unit every command prints: "318.2 kB", "4.1 MB"."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(round(size, 1)) < 1000 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def silence_stdout() -> None:
    """After a BrokenPipeError (``... | head``): point stdout at /dev/null so the exit flush is quiet too.

    The reader has what it wanted; the program then ends with exit code 0 and nothing on stderr.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (a test runner's capture): nothing to flush
        pass


def _fit(text: str, width: int) -> str:
    """Keep the end of a long path: the file name is the part a reader needs."""
    return text if len(text) <= width else "…" + text[-(width - 1):]
