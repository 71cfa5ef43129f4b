"""The one thin class of the runtime: an ONNX image classifier with its preprocessing and decoding.

    clf = Classifier("model.int8.onnx")                     # labels, size, mean/std from the model's metadata
    clf.classify("cat.jpg", top_k=3).label                  # -> "cat"
    for r in clf.classify_paths(paths, batch_size=16):      # streaming, bounded memory, input order
        print(r.path, r.prediction.label if r.ok else r.error)
    Classifier(proto.SerializeToString()).predict_pixels(pixels)   # an in-memory model: (N, classes) probabilities

Any ONNX image classifier works, edgecnn's or not: a model without edgecnn metadata takes ``labels``, ``size``,
``mean`` and ``std`` from the caller; layout (NCHW or NHWC) and dtype are read from the graph.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from . import pipeline
from .decode import OodRule, is_uncertain, is_unknown, looks_like_probabilities, margin, softmax
from .decode import top_k as top_classes  # the methods' `top_k` argument would shadow it
from .onnx_wire import WireError, external_locations
from .policy import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN
from .preprocess import ImageInput, batches, preprocess, to_model_input
from .results import FileResult, FrameResult, Prediction, StageTimes, StreamStats
from .session import IN_MEMORY, ModelError, create_session
from .spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_FLOAT_NCHW,
    INPUT_UINT8_NHWC,
    LOGITS_OUTPUT,
    META_INPUT,
    META_OOD,
    META_PRECISION,
    META_SPEC,
    PROBABILITIES_OUTPUT,
    PreprocessSpec,
)

_DTYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(float16)": "float16"}
_MAX_PREDICT_BATCH = 64  # classify() of a long list runs in chunks of this many images


class SerializedModel(Protocol):
    """An in-memory model that can give its bytes: an ``onnx.ModelProto`` (the runtime never imports onnx)."""

    def SerializeToString(self) -> bytes: ...  # noqa: N802 (protobuf's name)


ModelSource = str | os.PathLike | bytes | SerializedModel


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
    protobuf wire format directly (runtime/onnx_wire.py), so that the runtime needs no ``onnx``.
    """
    path = Path(model_path)
    data = path.read_bytes()
    if b"location" not in data:  # every external-data entry has this key: most models end here
        return
    folder = path.resolve().parent
    try:
        locations = list(external_locations(data))
    except WireError as exc:
        raise ModelError(f"{path}: {exc}") from None
    for location in locations:
        target = (folder / location).resolve()
        if os.path.isabs(location) or (target != folder and folder not in target.parents):
            raise ModelError(f"{path}: external data {location!r} lies outside the model's folder {folder}; refused")


class Classifier:
    """An onnxruntime session plus the preprocessing spec and output decoding of one image classifier.

    ``model`` is an ONNX file, or a model in memory: its bytes or an ``onnx.ModelProto``. ``path`` is then
    None and messages and ``describe()`` name it ``<in-memory>``; external data files are not checked (an
    in-memory model has no folder they could escape from).
    """

    def __init__(
        self,
        model: ModelSource,
        device: str = "auto",
        threads: int | None = None,
        *,
        labels: Sequence[str] | str | os.PathLike | None = None,
        size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        source: str | bytes
        self.path: Path | None
        if isinstance(model, (str, os.PathLike)):
            self.path = Path(model)
            self.name = str(self.path)  # how messages and describe() name the model
            if not self.path.is_file():
                raise ModelError(f"{self.name}: no such model file")
            check_external_data(self.path)
            source = str(self.path)
        else:
            self.path, self.name = None, IN_MEMORY
            source = bytes(model) if isinstance(model, (bytes, bytearray, memoryview)) else model.SerializeToString()
        self.session, self.device = create_session(source, device=device, threads=threads, name=self.name)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.precision = self.metadata.get(META_PRECISION, "unknown")

        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shapes = ", ".join(f"{i.name}{list(i.shape)}" for i in inputs)
            raise ModelError(f"{self.name}: not an image classifier: expected one 4-D image input, found {shapes or 'none'}")
        self.input_name = inputs[0].name
        self.input_dtype = _DTYPES.get(inputs[0].type, "")
        if not self.input_dtype:
            raise ModelError(f"{self.name}: input {self.input_name!r} has type {inputs[0].type}; expected uint8, float or float16")
        self.input_layout = _layout(inputs[0].shape, self.metadata.get(META_INPUT))
        batch_dim = inputs[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        graph_size = _graph_size(inputs[0].shape, self.input_layout)

        self.output_name, self.outputs_probabilities = self._pick_output()
        self.spec = self._make_spec(labels, size, mean, std, graph_size)
        num_classes = self._num_classes()
        if self.spec.labels and len(self.spec.labels) != num_classes:
            raise ModelError(
                f"{self.name}: {len(self.spec.labels)} labels given but the model has {num_classes} outputs; "
                "the label file needs one line per output class"
            )
        if not self.spec.labels:
            self.spec = PreprocessSpec(**{**self.spec.to_dict(), "labels": tuple(str(i) for i in range(num_classes))})
        self.labels = self.spec.labels
        # Unknown-input rejection (classify(..., reject_unknown=True)): the rule a calibration stored, and the
        # logits it is defined on (a model without a logits output: log-probabilities, as `edgecnn calibrate` fits).
        self.ood_rule = _ood_rule(self.metadata.get(META_OOD), self.name)
        names = [o.name for o in self.session.get_outputs()]
        self.logits_output = LOGITS_OUTPUT if self.outputs_probabilities and LOGITS_OUTPUT in names else None

    # ----------------------------------------------------------------------------------------------- setup
    def _pick_output(self) -> tuple[str, bool]:
        outputs = self.session.get_outputs()
        for out in outputs:
            if out.name == PROBABILITIES_OUTPUT:
                return out.name, True
        first = outputs[0]
        if first.type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
            raise ModelError(f"{self.name}: output {first.name!r} has type {first.type}; a classifier outputs float scores")
        return first.name, False

    def _make_spec(self, labels: Sequence[str] | str | os.PathLike | None, size: int | None,
                   mean: Sequence[float] | None, std: Sequence[float] | None, graph_size: int | None) -> PreprocessSpec:
        base: dict[str, Any]
        if META_SPEC in self.metadata:
            try:
                base = PreprocessSpec.from_json(self.metadata[META_SPEC]).to_dict()
            except (ValueError, TypeError, json.JSONDecodeError) as exc:
                raise ModelError(f"{self.name}: corrupt {META_SPEC} metadata ({exc})") from None
        else:
            if size is None and graph_size is None:
                raise ModelError(
                    f"{self.name}: the model has no edgecnn metadata and a dynamic input size; give --size N"
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
            raise ModelError(f"{self.name}: the model's input is {graph_size}x{graph_size}, not {spec.size}; drop --size or give {graph_size}")
        return spec

    def _num_classes(self) -> int:
        out = next(o for o in self.session.get_outputs() if o.name == self.output_name)
        if len(out.shape) >= 2 and isinstance(out.shape[-1], int) and all(isinstance(d, int) for d in out.shape[1:]):
            return int(np.prod(out.shape[1:]))
        # Dynamic class dimension: ask the model once.
        probe = np.zeros((self.fixed_batch or 1, self.spec.size, self.spec.size, 3), np.uint8)
        return int(self._run(probe).shape[1])

    # ----------------------------------------------------------------------------------------- inference
    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 RGB -> the tensor this graph's input takes (layout, dtype, normalization)."""
        return to_model_input(pixels, self.spec, layout=self.input_layout, dtype=self.input_dtype)

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        try:
            scores = self.session.run([self.output_name], {self.input_name: self.model_input(pixels)})[0]
        except Exception as exc:  # onnxruntime's own exception types; the model is at fault, not the image
            text = str(exc).strip().splitlines()
            raise ModelError(f"{self.name}: inference failed ({text[-1] if text else type(exc).__name__})") from None
        return np.asarray(scores, dtype=np.float32).reshape(len(pixels), -1)

    def predict_pixels(self, pixels: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """(N, size, size, 3) uint8 RGB -> (N, classes) float32 probabilities.

        A graph with a fixed batch runs in chunks of that size, the last one padded; any other runs
        ``batch_size`` images at a time (all at once by default).
        """
        if pixels.ndim != 4 or pixels.shape[1:] != (self.spec.size, self.spec.size, 3) or pixels.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 pixels of shape (N, {self.spec.size}, {self.spec.size}, 3), got {pixels.dtype} {pixels.shape}"
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(pixels)
        if n == 0:
            return np.empty((0, len(self.labels)), np.float32)
        step = self.fixed_batch or batch_size or n
        if n == step or (self.fixed_batch is None and n < step):
            scores = self._run(pixels)
        else:
            scores = np.concatenate([self._run(chunk)[:real]
                                     for chunk, real in batches(pixels, step, pad=self.fixed_batch is not None)])
        if self.outputs_probabilities or looks_like_probabilities(scores):
            return scores
        return softmax(scores).astype(np.float32, copy=False)

    def predict_scores(self, pixels: np.ndarray, *, logits: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, logits) of (N, size, size, 3) uint8 pixels; both outputs come from one session.run.

        ``logits=False`` gives (probabilities, None), as cheap as predict_pixels. A model without a ``logits``
        output gives log-probabilities as its logits.
        """
        if not logits or self.logits_output is None:
            probs = self.predict_pixels(pixels)
            return probs, (np.log(np.maximum(probs, 1e-12)) if logits else None)
        self.predict_pixels(pixels[:0])  # validates the shape and dtype
        names = [self.output_name, self.logits_output]
        step = self.fixed_batch or len(pixels) or 1
        parts = []
        for chunk, real in batches(pixels, step, pad=self.fixed_batch is not None):
            try:
                outs = self.session.run(names, {self.input_name: self.model_input(chunk)})
            except Exception as exc:  # onnxruntime's own exception types, as in _run
                text = str(exc).strip().splitlines()
                raise ModelError(f"{self.name}: inference failed ({text[-1] if text else type(exc).__name__})") from None
            parts.append([np.asarray(o, dtype=np.float32).reshape(len(chunk), -1)[:real] for o in outs])
        if not parts:
            return np.empty((0, len(self.labels)), np.float32), np.empty((0, len(self.labels)), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def check_reject_unknown(self) -> OodRule:
        """The stored unknown-input rule, or ModelError saying how to get one."""
        if self.ood_rule is None:
            raise ModelError(f"{self.name}: the model stores no unknown-input threshold ({META_OOD}); calibrate it first: "
                             f"edgecnn calibrate {self.name} --data VAL_DIR -o calibrated.onnx")
        return self.ood_rule

    def decode(self, probs: np.ndarray, *, top_k: int = 5, min_confidence: float = DEFAULT_MIN_CONFIDENCE, min_margin: float = DEFAULT_MIN_MARGIN,
               logits: np.ndarray | None = None, reject_unknown: bool = False) -> Prediction:
        """One row of probabilities -> Prediction; ``reject_unknown`` (with the row's ``logits``) sets ``unknown``."""
        unknown = None
        if reject_unknown:
            if logits is None:
                raise ValueError("reject_unknown needs the row's logits (predict_scores)")
            unknown = bool(is_unknown(logits, self.check_reject_unknown()))
        return Prediction(
            top=top_classes(probs, self.labels, top_k),
            margin=margin(probs),
            uncertain=is_uncertain(probs, min_confidence=min_confidence, min_margin=min_margin),
            unknown=unknown,
        )

    def preprocess(self, image: ImageInput, *, bgr: bool = False) -> np.ndarray:
        return preprocess(image, self.spec, bgr=bgr)

    def classify(
        self,
        images: ImageInput | Sequence[ImageInput],
        top_k: int = 5,
        *,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        min_margin: float = DEFAULT_MIN_MARGIN,
        bgr: bool = False,
        reject_unknown: bool = False,
    ) -> Prediction | list[Prediction]:
        """Classify one image (path, PIL image, HxWx3 array) or a list of them; bad input raises ImageError.

        ``bgr=True`` says numpy arrays come from OpenCV (BGR channel order). ``reject_unknown=True`` marks
        inputs that look like none of the classes (``Prediction.unknown``) by the rule stored in the model.
        """
        if reject_unknown:
            self.check_reject_unknown()
        items: list[ImageInput]
        if isinstance(images, (str, os.PathLike, Image.Image)) or (
                isinstance(images, np.ndarray) and images.ndim in (2, 3)):
            single, items = True, [images]
        else:
            single, items = False, list(images)
        results: list[Prediction] = []
        for i in range(0, len(items), _MAX_PREDICT_BATCH):
            chunk = items[i : i + _MAX_PREDICT_BATCH]
            pixels = np.stack([preprocess(item, self.spec, bgr=bgr) for item in chunk])
            probs, logits = self.predict_scores(pixels, logits=reject_unknown)
            for i, row in enumerate(probs):
                results.append(self.decode(row, top_k=top_k, min_confidence=min_confidence, min_margin=min_margin,
                                           logits=None if logits is None else logits[i], reject_unknown=reject_unknown))
        return results[0] if single else results

    def classify_paths(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        batch_size: int = 16,
        workers: int = 2,
        top_k: int = 5,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        min_margin: float = DEFAULT_MIN_MARGIN,
        timings: StageTimes | None = None,
        reject_unknown: bool = False,
    ) -> Generator[FileResult, None, None]:
        """Classify image files as a stream: results (or errors) in input order, memory bounded.

        ``workers`` threads decode and preprocess while the model runs on the previous batch (see
        runtime/pipeline.py); ``timings`` (a StageTimes) is filled in as results are yielded.
        """
        if reject_unknown:
            self.check_reject_unknown()
        return pipeline.classify_paths(self, paths, batch_size=batch_size, workers=workers, top_k=top_k,
                                       min_confidence=min_confidence, min_margin=min_margin, timings=timings,
                                       reject_unknown=reject_unknown)

    def classify_frames(
        self,
        frames: Iterable[np.ndarray],
        *,
        every: int = 1,
        max_frames: int | None = None,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        min_margin: float = DEFAULT_MIN_MARGIN,
        bgr: bool = True,
        stats: StreamStats | None = None,
        reject_unknown: bool = False,
    ) -> Iterator[FrameResult]:
        """Classify every ``every``-th frame of a stream (OpenCV's BGR by default), at most ``max_frames`` of them."""
        if reject_unknown:
            self.check_reject_unknown()
        return pipeline.classify_frames(self, frames, every=every, max_frames=max_frames, top_k=top_k,
                                        min_confidence=min_confidence, min_margin=min_margin, bgr=bgr, stats=stats,
                                        reject_unknown=reject_unknown)

    def describe(self) -> dict[str, Any]:
        """What a user wants to know about the loaded model, for a status line or --json."""
        return {
            "model": self.name,
            "device": self.device,
            "precision": self.precision,
            "input": f"{self.input_dtype} {self.input_layout} {self.spec.size}x{self.spec.size}",
            "classes": len(self.labels),
        }


def _ood_rule(text: str | None, name: str) -> OodRule | None:
    """The unknown-input rule of the model's edgecnn.ood metadata (None when absent)."""
    if text is None:
        return None
    try:
        return OodRule.from_dict(json.loads(text))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"{name}: corrupt {META_OOD} metadata ({exc})") from None


def _layout(shape: Sequence[Any], meta_input: str | None) -> str:
    """NCHW or NHWC: from edgecnn's metadata when present, else guessed from where the 3 channels are."""
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


__all__ = [
    "Classifier",
    "FileResult",
    "FrameResult",
    "ModelError",
    "ModelSource",
    "Prediction",
    "StageTimes",
    "StreamStats",
    "check_external_data",
    "read_labels",
]
