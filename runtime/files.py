"""The file loop shared by `edgecnn classify images` and the bundle's `app.pyz`, as runtime/stream.py is for cameras.

    code = classify_files(clf, ["photos/"], out=print, err=lambda s: print(s, file=sys.stderr), recursive=True)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from typing import TYPE_CHECKING

from . import output as fmt
from .policy import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN
from .results import FileResult, StageTimes
from .sources import expand_paths

if TYPE_CHECKING:
    from .classifier import Classifier

TABLE_WIDTH = 40  # characters of the path column in the table


def classify_files(
    clf: Classifier,
    paths: Iterable[str | os.PathLike],
    *,
    out: Callable[[str], None],
    err: Callable[[str], None],
    recursive: bool = False,
    batch_size: int = 16,
    workers: int = 2,
    top_k: int = 5,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    min_margin: float = DEFAULT_MIN_MARGIN,
    as_json: bool = False,
    width: int = TABLE_WIDTH,
    reject_unknown: bool = False,
) -> int:
    """Classify files, folders and globs: a table row (or a JSON line) per file through ``out``, the summary through ``err``.

    Returns the exit code: 0, 1 when any file could not be classified, 130 on Ctrl-C (after an
    "interrupted" summary). A closed stdout (``| head``) raises BrokenPipeError out of here, with the
    decoding threads stopped; the entry points end quietly on it.
    """
    times = StageTimes()
    start = time.perf_counter()
    results = clf.classify_paths(expand_paths(paths, recursive=recursive), batch_size=batch_size, workers=workers,
                                 top_k=top_k, min_confidence=min_confidence, min_margin=min_margin, timings=times,
                                 reject_unknown=reject_unknown)
    with closing(results):
        try:
            if not as_json:
                out(fmt.table_header(width))
            for result in results:
                out(_line(result, as_json=as_json, width=width))
        except KeyboardInterrupt:
            err("interrupted; " + fmt.summary_line(images=times.images, failed=times.failed,
                                                   seconds=time.perf_counter() - start))
            return 130
    err(fmt.summary_line(images=times.images, failed=times.failed, seconds=time.perf_counter() - start))
    return 1 if times.failed else 0


def _line(result: FileResult, *, as_json: bool, width: int) -> str:
    if result.error is not None:
        return fmt.json_line(fmt.error_dict(result.path, result.error)) if as_json else fmt.error_row(result.path, result.error, width=width)
    assert result.prediction is not None  # a FileResult holds a prediction or an error
    if as_json:
        return fmt.json_line(fmt.result_dict(result.path, result.prediction))
    return fmt.table_row(result.path, result.prediction, width=width)


__all__ = ["TABLE_WIDTH", "classify_files"]
