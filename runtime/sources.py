"""Where images come from: file paths (files, folders, globs) and frames (camera, video file, stream URL).

    for path in expand_paths(["photos/", "*.jpg"], recursive=True): ...
    with open_frames("0") as frames:                 # camera 0; or "clip.mp4", "rtsp://...", "picamera"
        for frame in frames: ...                     # HxWx3 uint8, in frames.bgr order

Paths stream lazily (a folder of 100,000 files is never held as decoded images). OpenCV and picamera2
are imported only when frames are asked for: the base install classifies files without them.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .preprocess import is_image_file

GLOB_CHARS = frozenset("*?[")
PICAMERA = "picamera"  # --source value for the Raspberry Pi camera through picamera2


class BadPath(str):
    """A path that ``expand_paths`` could not list; ``error`` says why. Classifiers report it as a failed file."""

    error: str

    def __new__(cls, path: str, error: str) -> BadPath:
        self = super().__new__(cls, path)
        self.error = error
        return self


class CameraError(OSError):
    """A frame source that cannot be opened, read or shown; the message names the source and the fix."""


def expand_paths(items: Iterable[str | os.PathLike], *, recursive: bool = False) -> Iterator[str]:
    """Files as given; folders as their image files (subfolders too with ``recursive``); globs expanded.

    Order is stable: folder entries and glob matches are sorted. A pattern that matches nothing, or a
    folder that cannot be listed, comes out as a ``BadPath`` so that it is reported, not dropped.
    """
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            count = 0
            for count, found in enumerate(_walk(path, recursive=recursive), 1):  # noqa: B007
                yield found
            if not count:
                hint = "" if recursive else " (add -r to look in subfolders)"
                yield BadPath(text, f"{text}: no image files in this folder{hint}")
        elif not path.exists() and GLOB_CHARS & set(text):
            matches = sorted(glob.iglob(text, recursive=recursive))
            if not matches:
                yield BadPath(text, f"{text}: no file matches this pattern")
            for match in matches:
                if Path(match).is_dir():
                    yield from _walk(Path(match), recursive=recursive)
                else:
                    yield match
        else:
            yield text


def _walk(folder: Path, *, recursive: bool) -> Iterator[str]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        yield BadPath(str(folder), f"{folder}: cannot list the folder ({exc.strerror or exc})")
        return
    subfolders = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            subfolders.append(entry.path)
        elif is_image_file(entry.name):
            yield entry.path
    del entries
    if recursive:
        for sub in subfolders:
            yield from _walk(Path(sub), recursive=True)


class FrameSource:
    """Frames from a camera index, a video file, a stream URL, or picamera2; iterate, then close()."""

    def __init__(self, source: str | int, *, width: int | None = None, height: int | None = None):
        self.source = str(source)
        self.frames_read = 0
        self._cap: Any = None
        self._picam: Any = None
        if self.source == PICAMERA:
            self.kind, self.bgr = "picamera", True
            self._open_picamera(width or 640, height or 480)
            return
        if self.source == "0" and _missing("cv2") and not _missing("picamera2"):
            # A Raspberry Pi with picamera2 but no OpenCV: its camera is the natural "camera 0".
            self.kind, self.bgr = "picamera", True
            self._open_picamera(width or 640, height or 480)
            return
        cv2 = _import_cv2(for_what=f"reading frames from {self.source!r}")
        target: int | str  # OpenCV takes a camera index or a file name / URL
        if self.source.isdigit():
            self.kind, target = "camera", int(self.source)
        elif "://" in self.source:
            self.kind, target = "stream", self.source
        else:
            self.kind, target = "file", self.source
            if not Path(self.source).is_file():
                raise CameraError(f"{self.source}: no such video file (give a camera index like 0, a file, or a URL)")
        self.bgr = True
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            hint = {
                "camera": "is it connected, and not used by another program?",
                "stream": "is the URL right and the stream up?",
                "file": "is it a video format OpenCV can read?",
            }[self.kind]
            raise CameraError(f"cannot open {self.describe()}: {hint}")
        if width and height and self.kind == "camera":
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    def _open_picamera(self, width: int, height: int) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraError("--source picamera needs picamera2 (on Raspberry Pi OS: sudo apt install python3-picamera2)") from None
        try:
            self._picam = Picamera2()
            # picamera2's "RGB888" is stored B, G, R in memory: the order OpenCV uses.
            self._picam.configure(self._picam.create_preview_configuration(main={"format": "RGB888", "size": (width, height)}))
            self._picam.start()
        except Exception as exc:  # libcamera raises RuntimeError/IndexError when no camera is attached
            raise CameraError(f"cannot open the Raspberry Pi camera ({exc}); is it connected and enabled?") from None

    def describe(self) -> str:
        return {"camera": f"camera {self.source}", "stream": f"stream {self.source}", "file": f"video file {self.source}",
                "picamera": "the Raspberry Pi camera"}[self.kind]

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            if self._picam is not None:
                try:
                    frame = self._picam.capture_array()
                except Exception as exc:  # libcamera errors have no common base class
                    raise CameraError(f"{self.describe()} stopped after {self.frames_read} frames ({exc})") from None
            else:
                ok, frame = self._cap.read()
                if not ok or frame is None:
                    if self.kind == "file" and self.frames_read > 0:
                        return  # end of the video
                    if self.kind == "file":
                        raise CameraError(f"{self.describe()}: no frame could be decoded")
                    raise CameraError(
                        f"{self.describe()} disconnected or stopped sending frames after {self.frames_read} frames"
                    )
            self.frames_read += 1
            yield frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._picam is not None:
            self._picam.stop()
            self._picam.close()
            self._picam = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_frames(source: str | int = "0", **kwargs: Any) -> FrameSource:
    return FrameSource(source, **kwargs)


class Window:
    """An OpenCV window showing frames with a caption; ``show`` returns False when the user pressed q or Esc."""

    def __init__(self, title: str = "edgecnn"):
        cv2 = _import_cv2(for_what="--show")
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise CameraError("--show needs a display, and none is set (DISPLAY is empty); run without --show, e.g. with --json")
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise CameraError(
                "--show needs OpenCV built with GUI support: pip install opencv-python (the -headless build has no windows)"
            ) from None
        self.title = title
        self._cv2 = cv2

    def show(self, frame_bgr: np.ndarray, caption: str) -> bool:
        cv2 = self._cv2
        image = np.ascontiguousarray(frame_bgr)
        cv2.putText(image, caption, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(image, caption, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.imshow(self.title, image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        self._cv2.destroyWindow(self.title)


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def _import_cv2(*, for_what: str):
    # OpenCV's own `[ WARN:0@0.016] ...` lines would precede our one-line error; a user's setting wins.
    quiet = "OPENCV_LOG_LEVEL" not in os.environ
    if quiet:
        os.environ["OPENCV_LOG_LEVEL"] = "ERROR"
    try:
        import cv2
    except ImportError:
        # Outside the edgecnn package this is a deploy bundle (or a copy of the runtime): no extras to install.
        install = ("pip install 'edgecnn[camera]' (or opencv-python-headless)" if __name__.startswith("edgecnn.")
                   else "venv/bin/pip install -r requirements-camera.txt (see the bundle's README.md)")
        raise CameraError(
            f"{for_what} needs OpenCV: {install}; "
            "on a Raspberry Pi camera module, --source picamera uses picamera2 instead"
        ) from None
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if quiet and logging_api is not None:  # a cv2 imported before us did not read the variable
        logging_api.setLogLevel(logging_api.LOG_LEVEL_ERROR)
    return cv2
