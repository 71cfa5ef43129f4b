"""What bench measures and reports: one configuration (RowConfig), its measurements (BenchRow), the report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

Clock = Callable[[], float]

KIND_MODEL = "model"  # one session.run / forward on a random input of the model's shape
KIND_CLASSIFY = "classify-images"  # files -> decode, preprocess, infer, softmax: the `classify images` code
KIND_NAIVE = "naive-loop"  # the loop a user would write first: open, convert, resize, run, one at a time
META_MACS = "edgecnn.macs"  # optional metadata key: multiply-accumulates of one image at the model's size
# runtime.spec.META_PRECISION, repeated so that an OpenVINO worker need not import edgecnn.runtime (onnxruntime).
META_PRECISION = "edgecnn.precision"


class BenchError(ValueError):
    """Bad bench input (a missing model, an option out of range); the message names it and the fix."""


class WorkerError(RuntimeError):
    """One row's worker failed; the row is reported as unavailable with this reason."""


@dataclass(frozen=True)
class RowConfig:
    """One configuration to measure; it travels to its worker process as the first JSON line."""

    model: str  # the .onnx file (the .pt checkpoint for torch rows)
    backend: str  # onnxruntime | torch | openvino: picks the runner, with kind
    kind: str  # KIND_MODEL | KIND_CLASSIFY | KIND_NAIVE
    batch: int  # images per run (end-to-end rows: the pipeline's batch size)
    threads: int
    device: str  # cpu | cuda | auto
    variant: str = ""  # torch: eager | compile
    paths: tuple[str, ...] = ()  # end-to-end rows: the image files of one pass

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RowConfig:
        data = json.loads(text)
        return cls(**{**data, "paths": tuple(data.get("paths", ()))})


class SetupInfo(TypedDict):
    """What a runner's setup reports: the cold costs, and what the model turned out to be."""

    import_ms: float  # importing what the row needs, in its fresh process
    init_ms: float  # session creation / checkpoint load (+ compile setup)
    device: str  # the device the session really got
    precision: str
    macs: int | None


@dataclass
class BenchRow:
    """One configuration's measurements. Times in milliseconds; None where not measured or not applicable."""

    model: str  # path as given (the checkpoint for torch rows)
    backend: str  # onnxruntime | torch | openvino
    precision: str  # fp32 | int8 | ... from the model's metadata; "unknown" without it
    batch: int  # images per run (for classify-images: the batch size of the pipeline)
    threads: int
    kind: str = KIND_MODEL
    variant: str = ""  # torch: eager | compile
    device: str = "cpu"
    runs: int = 0  # measured runs (for classify-images and naive-loop: passes over the images)
    images: int | None = None  # images per pass (end-to-end rows)
    import_ms: float | None = None  # cold `import edgecnn.runtime` (or torch) in a fresh interpreter
    init_ms: float | None = None  # session creation / checkpoint load (+ compile setup)
    first_ms: float | None = None  # the first run after creation (lazy allocation, torch.compile's compile)
    min_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None  # p99.9: only with at least stats.P999_MIN_RUNS runs, else None
    max_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    throughput_ips: float | None = None  # images per second
    cpu_percent: float | None = None  # process CPU time / wall time over the measured runs (100 = one core busy)
    size_bytes: int | None = None  # the model file's size (the checkpoint's for torch rows)
    accuracy: float | None = None  # top-1 on --eval DIR of this file through this backend (once per file)
    eval_images: int | None = None  # images that accuracy was computed on
    accuracy_note: str = ""  # why accuracy is None although --eval was given
    peak_rss_mb: float | None = None  # peak resident memory of the process that ran this row
    rss_scope: str = "row"  # row: its own worker process; process-so-far: shared in-process measurement
    macs: int | None = None  # multiply-accumulates per image
    gflops: float | None = None  # 2 * macs * batch / p50
    peak_fraction: float | None = None  # gflops / (measured single-thread FP32 peak x threads)
    stages_ms: dict[str, float] | None = None  # end-to-end rows: ms per image in each stage
    note: str = ""  # "unavailable: reason" when the row could not run

    @property
    def label(self) -> str:
        return self.named(Path(self.model).name)

    def named(self, name: str) -> str:
        """The row's label with ``name`` in place of the model's file name."""
        what = {KIND_MODEL: self.variant or self.backend, KIND_CLASSIFY: "classify", KIND_NAIVE: "naive"}[self.kind]
        return f"{name} {what} {self.precision} b{self.batch} t{self.threads}"


@dataclass
class BenchReport:
    rows: list[BenchRow]
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    peak_gflops: float | None = None  # single-thread FP32 SGEMM

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "machine": self.machine, "settings": self.settings,
                "peak_gflops": self.peak_gflops}
