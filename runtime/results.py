"""What the runtime answers: a Prediction per image, per-file and per-frame results, and the run's timings.

    pred = clf.classify("cat.jpg"); pred.label, pred.prob, pred.margin, pred.uncertain
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .decode import Class


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the top classes, the margin between the first two, and the confidence flag."""

    top: list[Class]
    margin: float  # probability of the first class minus that of the second
    uncertain: bool  # top probability or margin below the caller's thresholds
    unknown: bool | None = None  # none of the classes, by the model's stored rule; None when not asked (reject_unknown)

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def index(self) -> int:
        return self.top[0].index

    @property
    def prob(self) -> float:
        return self.top[0].prob


@dataclass(frozen=True)
class FileResult:
    """One file of a batch: a prediction, or the reason it could not be classified."""

    path: str
    prediction: Prediction | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class StageTimes:
    """Where the time of ``classify_paths`` went; filled in as it runs."""

    images: int = 0  # files classified
    failed: int = 0  # files that gave an error
    batches: int = 0
    decode_s: float = 0.0  # decode + preprocess, summed over the worker threads
    wait_s: float = 0.0  # time the inference loop sat waiting for decoded images
    infer_s: float = 0.0  # session.run (and the model-input conversion)
    post_s: float = 0.0  # softmax, top-k, margin, building results
    wall_s: float = 0.0  # first file submitted to last result yielded

    def to_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = dict(self.__dict__)
        out["images_per_s"] = self.images / self.wall_s if self.wall_s > 0 else 0.0
        return out


@dataclass(frozen=True)
class FrameResult:
    """One classified video frame."""

    frame: int  # index of the frame in the source, from 0 (frames skipped by `every` count too)
    prediction: Prediction
    fps: float  # frames classified per second over the last few frames
    latency_ms: float  # preprocess + inference + decoding of this frame
    image: np.ndarray = field(repr=False, compare=False)  # the frame as read, for drawing on


@dataclass
class StreamStats:
    """Totals of ``classify_frames``, for the summary printed at the end (or on Ctrl-C)."""

    frames_read: int = 0
    frames_classified: int = 0
    wall_s: float = 0.0  # first frame read to last frame classified
    latency_s: float = 0.0  # summed per-frame latency

    @property
    def mean_fps(self) -> float:
        return self.frames_classified / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def mean_latency_ms(self) -> float:
        return 1000.0 * self.latency_s / self.frames_classified if self.frames_classified else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {"frames_read": self.frames_read, "frames": self.frames_classified, "mean_fps": self.mean_fps,
                "mean_latency_ms": self.mean_latency_ms, "wall_s": self.wall_s}


__all__ = ["FileResult", "FrameResult", "Prediction", "StageTimes", "StreamStats"]
