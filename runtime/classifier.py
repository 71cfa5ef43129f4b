"""The one thin class of the runtime: an ONNX image classifier with its preprocessing and decoding.

    clf = Classifier("model.int8.onnx")                     # labels, size, mean/std from the model's metadata
    clf.classify("cat.jpg", top_k=3).label                  # -> "cat"
    for r in clf.classify_paths(paths, batch_size=16):      # streaming, bounded memory, input order
        print(r.path, r.prediction.label if r.ok else r.error)

Any ONNX image classifier works, edgecnn's or not: a model without edgecnn metadata takes ``labels``, ``size``,
``mean`` and ``std`` from the caller; layout (NCHW or NHWC) and dtype are read from the graph.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .decode import Class, is_uncertain, looks_like_probabilities, margin, softmax
from .decode import top_k as top_classes  # the methods' `top_k` argument would shadow it
from .preprocess import ImageError, ImageInput, preprocess, to_model_input
from .session import ModelError, create_session
from .spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_FLOAT_NCHW,
    INPUT_UINT8_NHWC,
    META_INPUT,
    META_PRECISION,
    META_SPEC,
    PreprocessSpec,
)

PROBABILITIES_OUTPUT = "probabilities"  # name of the softmax output that edgecnn's exporter writes
_DTYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(float16)": "float16"}
_MAX_PREDICT_BATCH = 64  # classify() of a long list runs in chunks of this many images


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the top classes, the margin between the first two, and the confidence flag."""

    top: list[Class]
    margin: float  # probability of the first class minus that of the second
    uncertain: bool  # top probability or margin below the caller's thresholds

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


def read_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """One label per line; blank lines and surrounding whitespace are ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the label file ({exc})") from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise ValueError(f"{path}: the label file is empty; write one label per line")
    return labels


def check_external_data(model_path: str | os.PathLike) -> None:
    """Refuse a model whose external data lies outside its folder (absolute, ``..``, or a symlink out).

    onnxruntime 1.32 refuses these itself; older versions, still common on boards, do not. Reads the
    protobuf wire format directly, so that the runtime needs no ``onnx``.
    """
    path = Path(model_path)
    data = path.read_bytes()
    if b"location" not in data:  # every external-data entry has this key: most models end here
        return
    folder = path.resolve().parent
    try:
        locations = list(_external_locations(data))
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    for location in locations:
        target = (folder / location).resolve()
        if os.path.isabs(location) or (target != folder and folder not in target.parents):
            raise ModelError(f"{path}: external data {location!r} lies outside the model's folder {folder}; refused")


class Classifier:
    """An onnxruntime session plus the preprocessing spec and output decoding of one image classifier."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str = "auto",
        threads: int | None = None,
        *,
        labels: Sequence[str] | str | os.PathLike | None = None,
        size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        check_external_data(self.path)
        self.session, self.device = create_session(self.path, device=device, threads=threads)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.precision = self.metadata.get(META_PRECISION, "unknown")

        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shapes = ", ".join(f"{i.name}{list(i.shape)}" for i in inputs)
            raise ModelError(f"{self.path}: not an image classifier: expected one 4-D image input, found {shapes or 'none'}")
        self.input_name = inputs[0].name
        self.input_dtype = _DTYPES.get(inputs[0].type, "")
        if not self.input_dtype:
            raise ModelError(f"{self.path}: input {self.input_name!r} has type {inputs[0].type}; expected uint8, float or float16")
        self.input_layout = _layout(inputs[0].shape, self.metadata.get(META_INPUT))
        batch_dim = inputs[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        graph_size = _graph_size(inputs[0].shape, self.input_layout)

        self.output_name, self.outputs_probabilities = self._pick_output()
        self.spec = self._make_spec(labels, size, mean, std, graph_size)
        num_classes = self._num_classes()
        if self.spec.labels and len(self.spec.labels) != num_classes:
            raise ModelError(
                f"{self.path}: {len(self.spec.labels)} labels given but the model has {num_classes} outputs; "
                "the label file needs one line per output class"
            )
        if not self.spec.labels:
            self.spec = PreprocessSpec(**{**self.spec.to_dict(), "labels": tuple(str(i) for i in range(num_classes))})
        self.labels = self.spec.labels

    # ----------------------------------------------------------------------------------------------- setup
    def _pick_output(self) -> tuple[str, bool]:
        outputs = self.session.get_outputs()
        for out in outputs:
            if out.name == PROBABILITIES_OUTPUT:
                return out.name, True
        first = outputs[0]
        if first.type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
            raise ModelError(f"{self.path}: output {first.name!r} has type {first.type}; a classifier outputs float scores")
        return first.name, False

    def _make_spec(self, labels, size, mean, std, graph_size: int | None) -> PreprocessSpec:
        base: dict[str, Any]
        if META_SPEC in self.metadata:
            try:
                base = PreprocessSpec.from_json(self.metadata[META_SPEC]).to_dict()
            except (ValueError, TypeError, json.JSONDecodeError) as exc:
                raise ModelError(f"{self.path}: corrupt {META_SPEC} metadata ({exc})") from None
        else:
            if size is None and graph_size is None:
                raise ModelError(
                    f"{self.path}: the model has no edgecnn metadata and a dynamic input size; give --size N"
                )
            base = {"size": graph_size or size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        if labels is not None:
            base["labels"] = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else tuple(labels)
        if size is not None:
            base["size"] = int(size)
        if mean is not None:
            base["mean"] = tuple(mean)
        if std is not None:
            base["std"] = tuple(std)
        spec = PreprocessSpec.from_dict(base)
        if graph_size is not None and spec.size != graph_size:
            raise ModelError(f"{self.path}: the model's input is {graph_size}x{graph_size}, not {spec.size}; drop --size or give {graph_size}")
        return spec

    def _num_classes(self) -> int:
        out = next(o for o in self.session.get_outputs() if o.name == self.output_name)
        if len(out.shape) >= 2 and isinstance(out.shape[-1], int) and all(isinstance(d, int) for d in out.shape[1:]):
            return int(np.prod(out.shape[1:]))
        # Dynamic class dimension: ask the model once.
        probe = np.zeros((self.fixed_batch or 1, self.spec.size, self.spec.size, 3), np.uint8)
        return int(self._run(probe).shape[1])

    # ----------------------------------------------------------------------------------------- inference
    def _run(self, pixels: np.ndarray) -> np.ndarray:
        feed = to_model_input(pixels, self.spec, layout=self.input_layout, dtype=self.input_dtype)
        try:
            scores = self.session.run([self.output_name], {self.input_name: feed})[0]
        except Exception as exc:  # onnxruntime's own exception types; the model is at fault, not the image
            text = str(exc).strip().splitlines()
            raise ModelError(f"{self.path}: inference failed ({text[-1] if text else type(exc).__name__})") from None
        return np.asarray(scores, dtype=np.float32).reshape(len(pixels), -1)

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 RGB -> (N, classes) float32 probabilities."""
        if pixels.ndim != 4 or pixels.shape[1:] != (self.spec.size, self.spec.size, 3) or pixels.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 pixels of shape (N, {self.spec.size}, {self.spec.size}, 3), got {pixels.dtype} {pixels.shape}"
            )
        n = len(pixels)
        if self.fixed_batch and n != self.fixed_batch:
            step = self.fixed_batch
            parts = []
            for i in range(0, n, step):
                chunk = pixels[i : i + step]
                if len(chunk) < step:  # the graph wants exactly `step` images: pad, then drop the padding
                    chunk = np.concatenate([chunk, np.zeros((step - len(chunk),) + chunk.shape[1:], np.uint8)])
                parts.append(self._run(chunk))
            scores = np.concatenate(parts)[:n]
        else:
            scores = self._run(pixels)
        if self.outputs_probabilities or looks_like_probabilities(scores):
            return scores
        return softmax(scores).astype(np.float32, copy=False)

    def decode(self, probs: np.ndarray, *, top_k: int = 5, min_confidence: float = 0.0, min_margin: float = 0.0) -> Prediction:
        """One row of probabilities -> Prediction."""
        return Prediction(
            top=top_classes(probs, self.labels, top_k),
            margin=margin(probs),
            uncertain=is_uncertain(probs, min_confidence=min_confidence, min_margin=min_margin),
        )

    def preprocess(self, image: ImageInput, *, bgr: bool = False) -> np.ndarray:
        return preprocess(image, self.spec, bgr=bgr)

    def classify(
        self,
        images: ImageInput | Sequence[ImageInput],
        top_k: int = 5,
        *,
        min_confidence: float = 0.0,
        min_margin: float = 0.0,
        bgr: bool = False,
    ) -> Prediction | list[Prediction]:
        """Classify one image (path, PIL image, HxWx3 array) or a list of them; bad input raises ImageError.

        ``bgr=True`` says numpy arrays come from OpenCV (BGR channel order).
        """
        single = isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3))
        items = [images] if single else list(images)  # type: ignore[arg-type]
        results: list[Prediction] = []
        for i in range(0, len(items), _MAX_PREDICT_BATCH):
            chunk = items[i : i + _MAX_PREDICT_BATCH]
            pixels = np.stack([preprocess(item, self.spec, bgr=bgr) for item in chunk])
            for row in self.predict_pixels(pixels):
                results.append(self.decode(row, top_k=top_k, min_confidence=min_confidence, min_margin=min_margin))
        return results[0] if single else results

    def classify_paths(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        batch_size: int = 16,
        workers: int = 2,
        top_k: int = 5,
        min_confidence: float = 0.0,
        min_margin: float = 0.0,
        timings: StageTimes | None = None,
    ) -> Iterator[FileResult]:
        """Classify image files as a stream: results (or errors) in input order, memory bounded.

        ``workers`` threads decode and preprocess (Pillow releases the GIL) while the model runs on the
        previous batch; at most about two batches of decoded images exist at once, so a folder of any size
        runs in flat memory. ``timings`` (a StageTimes) is filled in as results are yielded.
        """
        if batch_size < 1 or workers < 1:
            raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
        times = timings if timings is not None else StageTimes()
        lock = threading.Lock()
        spec = self.spec

        def decode_one(path: str) -> np.ndarray | str:
            if getattr(path, "error", None):  # sources.BadPath: a folder or pattern that gave no file
                return path.error  # type: ignore[attr-defined]
            start = time.perf_counter()
            try:
                return preprocess(path, spec)
            except ImageError as exc:
                return str(exc)
            except MemoryError:
                return f"{path}: too large to decode in memory"
            finally:
                elapsed = time.perf_counter() - start
                with lock:
                    times.decode_s += elapsed

        limit = 2 * batch_size + workers  # decoded-or-decoding images held at once
        pending: deque[tuple[str, Future]] = deque()
        source = iter(paths)
        exhausted = False
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgecnn-decode") as pool:
            try:
                while True:
                    while not exhausted and len(pending) < limit:
                        try:
                            path = next(source)
                            path = path if isinstance(path, str) else os.fspath(path)
                        except StopIteration:
                            exhausted = True
                            break
                        pending.append((path, pool.submit(decode_one, path)))
                    if not pending:
                        break
                    batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
                    t0 = time.perf_counter()
                    decoded = [(path, future.result()) for path, future in batch]
                    t1 = time.perf_counter()
                    good = [pixels for _, pixels in decoded if isinstance(pixels, np.ndarray)]
                    probs = self.predict_pixels(np.stack(good)) if good else np.empty((0, len(self.labels)), np.float32)
                    t2 = time.perf_counter()
                    results, row = [], 0
                    for path, pixels in decoded:
                        if isinstance(pixels, np.ndarray):
                            pred = self.decode(probs[row], top_k=top_k, min_confidence=min_confidence, min_margin=min_margin)
                            results.append(FileResult(path, pred))
                            row += 1
                        else:
                            results.append(FileResult(path, error=pixels))
                    t3 = time.perf_counter()
                    times.wait_s += t1 - t0
                    times.infer_s += t2 - t1
                    times.post_s += t3 - t2
                    times.batches += 1 if good else 0
                    times.images += row
                    times.failed += len(decoded) - row
                    del decoded, good, probs
                    yield from results
                    times.wall_s = time.perf_counter() - start
            finally:
                for _, future in pending:  # stopped early (error, Ctrl-C, caller broke off): drop queued work
                    future.cancel()

    def classify_frames(
        self,
        frames: Iterable[np.ndarray],
        *,
        every: int = 1,
        max_frames: int | None = None,
        top_k: int = 1,
        min_confidence: float = 0.0,
        min_margin: float = 0.0,
        bgr: bool = True,
        stats: StreamStats | None = None,
    ) -> Iterator[FrameResult]:
        """Classify every ``every``-th frame of a stream (OpenCV's BGR by default), at most ``max_frames`` of them."""
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        stats = stats if stats is not None else StreamStats()
        recent: deque[float] = deque(maxlen=30)
        start = None
        for index, image in enumerate(frames):
            now = time.perf_counter()
            start = now if start is None else start
            stats.frames_read += 1
            if index % every:
                continue
            pixels = preprocess(image, self.spec, bgr=bgr)[None]
            pred = self.decode(self.predict_pixels(pixels)[0], top_k=top_k, min_confidence=min_confidence, min_margin=min_margin)
            done = time.perf_counter()
            recent.append(done)
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 1.0 / max(done - now, 1e-9)
            stats.frames_classified += 1
            stats.latency_s += done - now
            stats.wall_s = done - start
            yield FrameResult(index, pred, fps, 1000.0 * (done - now), image)
            if max_frames is not None and stats.frames_classified >= max_frames:
                return

    def describe(self) -> dict[str, Any]:
        """What a user wants to know about the loaded model, for a status line or --json."""
        return {
            "model": str(self.path),
            "device": self.device,
            "precision": self.precision,
            "input": f"{self.input_dtype} {self.input_layout} {self.spec.size}x{self.spec.size}",
            "classes": len(self.labels),
        }


def _layout(shape: Sequence[Any], meta_input: str | None) -> str:
    if meta_input == INPUT_UINT8_NHWC:
        return "NHWC"
    if meta_input == INPUT_FLOAT_NCHW:
        return "NCHW"
    if shape[3] == 3 and shape[1] != 3:
        return "NHWC"
    if shape[1] == 3:
        return "NCHW"
    if shape[1] in (1, 4) or shape[3] in (1, 4):
        raise ModelError(f"input shape {list(shape)}: only 3-channel (RGB) image models are supported")
    return "NCHW"  # both channel dimensions symbolic: the common convention


def _graph_size(shape: Sequence[Any], layout: str) -> int | None:
    h, w = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        if h != w:
            raise ModelError(f"input shape {list(shape)}: only square inputs are supported")
        return h
    return None


# --------------------------------------------------------------------------- protobuf wire format (no onnx)
def _fields(buf: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; length-delimited values as memoryviews."""
    mv = memoryview(buf)
    pos, end = start, len(mv) if end is None else end
    while pos < end:
        key, pos = _varint(mv, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(mv, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            length, pos = _varint(mv, pos)
            value, pos = mv[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ModelError(f"not an ONNX model (protobuf wire type {wire} at byte {pos})")
        if pos > end:
            raise ModelError("not an ONNX model (truncated protobuf)")
        yield number, wire, value


def _varint(mv: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(mv):
            raise ModelError("not an ONNX model (truncated protobuf)")
        byte = mv[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _sub(buf, number: int) -> Iterator[memoryview]:
    for n, wire, value in _fields(buf):
        if n == number and wire == 2:
            yield value


def _external_locations(model: bytes) -> Iterator[str]:
    # ModelProto.graph = 7, .functions = 25 (FunctionProto.node = 7).
    for graph in _sub(model, 7):
        yield from _graph_locations(graph)
    for function in _sub(model, 25):
        for node in _sub(function, 7):
            yield from _node_locations(node)


def _graph_locations(graph) -> Iterator[str]:
    # GraphProto: node = 1, initializer = 5, sparse_initializer = 15 (values = 1, indices = 2).
    for n, wire, value in _fields(graph):
        if wire != 2:
            continue
        if n == 5:
            yield from _tensor_locations(value)
        elif n == 15:
            for sub in (1, 2):
                for tensor in _sub(value, sub):
                    yield from _tensor_locations(tensor)
        elif n == 1:
            yield from _node_locations(value)


def _node_locations(node) -> Iterator[str]:
    # NodeProto.attribute = 5; AttributeProto: t = 5, g = 6, tensors = 10, graphs = 11.
    for attribute in _sub(node, 5):
        for n, wire, value in _fields(attribute):
            if wire != 2:
                continue
            if n in (5, 10):
                yield from _tensor_locations(value)
            elif n in (6, 11):
                yield from _graph_locations(value)


def _tensor_locations(tensor) -> Iterator[str]:
    # TensorProto.external_data = 13: StringStringEntryProto(key = 1, value = 2).
    for entry in _sub(tensor, 13):
        kv = {n: bytes(v).decode("utf-8", "replace") for n, wire, v in _fields(entry) if wire == 2}
        if kv.get(1) == "location":
            yield kv.get(2, "")


__all__ = [
    "Classifier",
    "FileResult",
    "FrameResult",
    "ModelError",
    "Prediction",
    "StageTimes",
    "StreamStats",
    "check_external_data",
    "read_labels",
]
