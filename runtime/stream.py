"""The camera/video loop shared by `edgecnn classify camera` and the bundle's `app.pyz --camera`.

    failure = classify_stream(clf, "0", out=print, err=lambda s: print(s, file=sys.stderr))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import output as fmt
from .policy import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN
from .results import StreamStats
from .sources import CameraError, Window, open_frames


def classify_stream(
    clf: Any,
    source: str,
    *,
    out: Callable[[str], None],
    err: Callable[[str], None],
    every: int = 1,
    max_frames: int | None = None,
    top_k: int = 5,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    min_margin: float = DEFAULT_MIN_MARGIN,
    as_json: bool = False,
    show: bool = False,
    reject_unknown: bool = False,
) -> str | None:
    """Classify the frames of ``source``: one line per frame through ``out``, status and summary through ``err``.

    Returns the message of a camera that could not be opened or read to the end, None otherwise; Ctrl-C
    ends the loop cleanly and still prints the summary.
    """
    window = Window() if show else None
    stats = StreamStats()
    frames = open_frames(source)
    err(f"reading {frames.describe()}")
    failure = None
    try:
        for result in clf.classify_frames(frames, every=every, max_frames=max_frames, top_k=top_k,
                                          min_confidence=min_confidence, min_margin=min_margin, bgr=frames.bgr,
                                          stats=stats, reject_unknown=reject_unknown):
            out(fmt.json_line(fmt.frame_dict(result)) if as_json else fmt.frame_row(result))
            if window is not None and not window.show(result.image, fmt.caption(result)):
                break
    except KeyboardInterrupt:
        err("interrupted")
    except CameraError as exc:
        failure = str(exc)
    finally:
        frames.close()
        if window is not None:
            window.close()
    err(fmt.stream_summary(stats, frames.describe()))
    return failure
