"""ONNX FP32 -> INT8 (static QDQ, calibrated on real images), INT8 weights-only, or FP16; checked against FP32.

    result = quantize("model.onnx", "data/shapes/train", "model.int8.onnx", eval_dir="data/shapes/val")
    result.fp32_accuracy, result.quant_accuracy, result.agreement, result.size_ratio

Calibration images go through the runtime's ``preprocess`` with the spec embedded in the model, so the
quantizer sees exactly what the device will feed. The edgecnn metadata is carried over; the uint8
input stays uint8. The output file is written only when it passed the accuracy check (or ``force``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..fileio import atomic_path
from ..runtime.preprocess import ImageError, batches, is_image_file, preprocess
from ..runtime.spec import (
    INPUT_FLOAT_NCHW,
    INPUT_UINT8_NHWC,
    META_INPUT,
    META_PRECISION,
    META_SPEC,
    PreprocessSpec,
)
from . import graph as G

if TYPE_CHECKING:
    import onnx

    from ..runtime.classifier import Classifier, ModelSource

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
MODES = ("static", "dynamic")

# The options measured by benchmarks/quant_options.py (see the README): unsigned 8-bit activations and
# signed 8-bit per-channel weights with reduce_range, which keeps the u8*s8 pair sums of the AVX2 kernels
# (no VNNI) from saturating at no accuracy cost here, and which ARM64's kernels run just as well.
ACTIVATION_TYPE = "QUInt8"
WEIGHT_TYPE = "QInt8"
REDUCE_RANGE = True
# The first convolution (3 input channels) stays FP32: as QLinearConv it profiled at 46 us against 19 us for
# its FP32 NCHWc kernel (resnet8, 64 px), and whole-model INT8 latency was 1-13% lower without it in six
# side-by-side runs; the layer that sees raw pixels also keeps full precision.
FIRST_CONV_FP32 = True
PREDICT_BATCH = 32  # images per onnxruntime call when scoring FP32 against the quantized model
# The speed-up below which quantizing is not worth it for speed: INT8 costs accuracy and calibration, so it
# should buy at least this much at batch 1 on one thread, where edge devices run. Below it `quantize` says
# so with the figures and recommends shipping FP32 (the quantized file may still be worth it for its size).
MIN_SPEEDUP = 1.25
SPEED_SECONDS = 2.0  # default time budget of the on-the-spot FP32 vs quantized latency measurement


class QuantizeError(ValueError):
    """A quantization that cannot be done or failed its check; the message says which and why."""


@dataclass
class QuantizeResult:
    path: Path
    written: bool  # False only when the accuracy check failed without force (then QuantizeError is raised)
    passed: bool  # the accuracy drop is within max_drop (True when there was no evaluation)
    precision: str  # int8, int8-dynamic, fp16
    method: str | None
    per_channel: bool
    calib_images: int
    fp32_bytes: int
    quant_bytes: int
    size_ratio: float  # fp32_bytes / quant_bytes
    agreement: float | None  # share of images where FP32 and the quantized model give the same top-1
    agreement_on: str  # "eval", "calibration", or "none": no images given (dynamic/FP16 alone), not measured
    agreement_images: int
    fp32_accuracy: float | None = None
    quant_accuracy: float | None = None
    accuracy_drop: float | None = None  # fp32 - quantized, as a fraction (0.01 = 1 point)
    eval_images: int = 0
    fp32_ms: float | None = None  # median latency at batch 1, one thread, measured here after quantizing
    quant_ms: float | None = None
    speedup: float | None = None  # fp32_ms / quant_ms; None when not measured (speed_seconds=0)
    recommendation: str | None = None  # set when the speed-up is below MIN_SPEEDUP: what to ship instead
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def load_fp32(path: str | os.PathLike) -> tuple[onnx.ModelProto, PreprocessSpec, str]:
    """The model, its spec and input kind; any file that is not a self-contained edgecnn ONNX is an error."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise QuantizeError(f"{path}: no such model file")
    from ..runtime.filekind import not_onnx_message

    wrong_kind = not_onnx_message(path)
    if wrong_kind:
        raise QuantizeError(wrong_kind)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError... for a file that is not a protobuf
        raise QuantizeError(f"{path}: not an ONNX model ({type(exc).__name__}); give a .onnx file from `edgecnn export`") from None
    if not model.graph.node:
        raise QuantizeError(f"{path}: not an ONNX model (no graph); give a .onnx file from `edgecnn export`")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise QuantizeError(f"{path}: keeps its weights in external data files; export a self-contained model")
    meta = G.read_metadata(model)
    if META_SPEC not in meta:
        raise QuantizeError(f"{path}: has no edgecnn metadata (labels, preprocessing); export it with `edgecnn export`")
    if meta.get(META_PRECISION, "fp32") != "fp32":
        raise QuantizeError(f"{path}: is already {meta[META_PRECISION]}; quantize the FP32 model from `edgecnn export`")
    spec = PreprocessSpec.from_json(meta[META_SPEC])
    kind = meta.get(META_INPUT, INPUT_FLOAT_NCHW)
    return model, spec, kind


def image_files(folder: str | os.PathLike, *, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Images under ``folder`` (recursively), a seeded random sample of ``limit`` when there are more."""
    root = Path(folder)
    if not root.is_dir():
        raise QuantizeError(f"{root}: image folder not found")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise QuantizeError(f"{root}: no images found (looked for .jpg, .png, ... in it and its sub-folders)")
    if limit is not None and len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    return files


def load_pixels(files: list[Path], spec: PreprocessSpec) -> tuple[np.ndarray, list[Path]]:
    """uint8 NHWC pixels of the readable files; unreadable ones are logged and skipped."""
    pixels, kept = [], []
    for path in files:
        try:
            pixels.append(preprocess(path, spec))
            kept.append(path)
        except ImageError as exc:
            log.warning("skipped: %s", exc)
    if not pixels:
        raise QuantizeError(f"none of the {len(files)} images could be read (first: {files[0]})")
    return np.stack(pixels), kept


def runtime_classifier(model: ModelSource, spec: PreprocessSpec, kind: str, *, threads: int | None = None) -> Classifier:
    """The runtime's Classifier on ``model`` (a file or its bytes) on the CPU: how the board will run it.

    ``spec`` is given explicitly because an intermediate file of the quantizer may have lost the metadata;
    ``kind`` (the model's edgecnn.input) must be the input layout the runtime finds in the graph.
    """
    from ..runtime.classifier import Classifier

    clf = Classifier(model, device="cpu", threads=threads, labels=spec.labels or None, size=spec.size,
                     mean=spec.mean, std=spec.std)
    expected = "NHWC" if kind == INPUT_UINT8_NHWC else "NCHW"
    if clf.input_layout != expected:
        raise QuantizeError(f"{clf.name}: the graph takes {clf.input_layout} input, but its metadata says {kind}")
    return clf


class _Reader:
    """onnxruntime CalibrationDataReader: the runtime's model input, one image (or one fixed batch) per call."""

    def __init__(self, clf: Classifier, pixels: np.ndarray, input_name: str):
        step = clf.fixed_batch or 1
        self._feeds: Iterator[dict[str, np.ndarray]] = (
            {input_name: clf.model_input(chunk)} for chunk, _ in batches(pixels, step, pad=clf.fixed_batch is not None))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of the reader protocol; one pass is all that calibration needs here
        raise NotImplementedError


def predict(model: ModelSource, pixels: np.ndarray, spec: PreprocessSpec, kind: str, *,
            threads: int | None = None) -> np.ndarray:
    """(N, classes) probabilities of an edgecnn ONNX model on uint8 NHWC ``pixels`` (CPU), through the runtime."""
    return runtime_classifier(model, spec, kind, threads=threads).predict_pixels(pixels, batch_size=PREDICT_BATCH)


def measure_latency(models: Sequence[ModelSource], spec: PreprocessSpec, kind: str, pixels: np.ndarray, *,
                    seconds: float = SPEED_SECONDS, max_runs: int = 500) -> list[float]:
    """Median batch-1, one-thread latency (ms) of each model, measured side by side on this CPU.

    The models take turns run by run, so that a busy machine slows them alike and the ratio stays honest;
    the loop ends after ``seconds`` (at least 5 runs each) or ``max_runs`` each.
    """
    clfs = [runtime_classifier(m, spec, kind, threads=1) for m in models]
    # A graph with a fixed batch dimension gets its batch (the latency is then that batch's).
    feeds = [{c.input_name: c.model_input(next(batches(pixels[:1], c.fixed_batch or 1, pad=c.fixed_batch is not None))[0])}
             for c in clfs]
    for clf, feed in zip(clfs, feeds, strict=True):
        for _ in range(3):  # warm-up: first-run allocations and kernel selection are not the steady state
            clf.session.run([clf.output_name], feed)
    times: list[list[float]] = [[] for _ in clfs]
    deadline = time.perf_counter() + seconds
    while len(times[0]) < max_runs and (len(times[0]) < 5 or time.perf_counter() < deadline):
        for clf, feed, row in zip(clfs, feeds, times, strict=True):
            t0 = time.perf_counter()
            clf.session.run([clf.output_name], feed)
            row.append(time.perf_counter() - t0)
    return [1000 * float(np.median(row)) for row in times]


def speed_advice(result: QuantizeResult) -> str | None:
    """What to ship when the quantized model does not pay for itself in speed on this CPU, else None."""
    if result.speedup is None or result.speedup >= MIN_SPEEDUP:
        return None
    verdict = "slower than" if result.speedup < 1 else f"only {result.speedup:.2f}x as fast as"
    return (f"{result.precision} is {verdict} FP32 on this CPU ({result.quant_ms:.3f} vs {result.fp32_ms:.3f} ms, "
            f"batch 1, 1 thread; worth it from {MIN_SPEEDUP:g}x): ship the FP32 model for speed, the "
            f"{result.precision} one only where its size ({result.size_ratio:.1f}x smaller) matters")


def eval_set(folder: str | os.PathLike, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and label indices of a class-folder tree (``val/`` inside it when present), classes by name."""
    from ..data import EvalSet, class_samples

    root, samples = class_samples(folder, spec.labels)
    dataset = EvalSet(samples, spec)
    if not len(dataset):
        raise QuantizeError(f"none of the {len(samples)} images in {root} could be read")
    return np.stack(list(dataset.images)), np.asarray(dataset.targets)  # list(): np.stack wants a Sequence


def static_qdq(src: Path, dst: Path, pixels: np.ndarray, spec: PreprocessSpec, kind: str, *, method: str = "minmax",
               per_channel: bool = True, exclude: Sequence[str] = (), activation_type: str = ACTIVATION_TYPE,
               weight_type: str = WEIGHT_TYPE, reduce_range: bool = REDUCE_RANGE,
               first_conv_fp32: bool = FIRST_CONV_FP32, fp32_ops: Sequence[str] = ()) -> None:
    """onnxruntime's static QDQ quantization of ``src`` into ``dst``, calibrated on uint8 NHWC ``pixels``.

    The type and range options are parameters so that benchmarks/quant_options.py can compare them.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_name(dst.name + ".pre.onnx")
    # The recommended pre-processing: ONNX shape inference and onnxruntime's basic fusions. The symbolic
    # pass is skipped because every dimension but the named batch is static already.
    with _quiet():
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    import onnx

    graph = onnx.load(str(pre), load_external_data=False).graph
    name = graph.input[0].name
    clf = runtime_classifier(src, spec, kind)  # calibration sees what the runtime feeds, padding included
    excluded = [*exclude, *([n.name for n in graph.node if n.op_type == "Conv"][:1] if first_conv_fp32 else [])]
    # By type, on the pre-processed graph: it has rewritten HardSwish as HardSigmoid -> Mul under new names.
    excluded += [n.name for n in graph.node if n.op_type in fp32_ops]
    with _quiet():
        quantize_static(str(pre), str(dst), _Reader(clf, pixels, name), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=getattr(QuantType, activation_type),
                        weight_type=getattr(QuantType, weight_type), calibrate_method=methods[method],
                        nodes_to_exclude=excluded)
    pre.unlink(missing_ok=True)


def _dynamic(src: Path, dst: Path, *, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ConvInteger exists only for uint8 weights in onnxruntime's CPU kernels; Gemm/MatMul take int8.
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_name(dst.name + ".pre.onnx")
    with _quiet():
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(dst), per_channel=per_channel, reduce_range=REDUCE_RANGE,
                         weight_type=QuantType.QUInt8)
    pre.unlink(missing_ok=True)


@contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantization tools print progress to stdout, which must stay clean for --json."""
    buffer = io.StringIO()
    logging.disable(logging.INFO)  # it also logs every tensor at INFO through the root logger
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        logging.disable(logging.NOTSET)
        if buffer.getvalue().strip():
            log.debug("onnxruntime.quantization: %s", buffer.getvalue().strip())


def _fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and activations in float16; uint8/float32 inputs and float32 outputs kept as they were.

    Uses the float16 converter shipped inside onnxruntime (onnxruntime.transformers.float16, the same
    code as onnxconverter-common), so no extra dependency is needed.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)


def quantize(
    model: str | os.PathLike,
    calib_dir: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    calib_size: int = 256,
    method: str = "minmax",
    per_channel: bool = True,
    eval_dir: str | os.PathLike | None = None,
    max_drop: float = 0.01,
    force: bool = False,
    mode: str = "static",
    fp16: bool = False,
    seed: int = 0,
    fp32_ops: Sequence[str] = (),
    speed_seconds: float = SPEED_SECONDS,
) -> QuantizeResult:
    """Quantize ``model`` into ``out`` and check it against the FP32 model.

    ``calib_dir`` (images, in class folders or not) calibrates static INT8 and measures FP32/quantized
    top-1 agreement; ``eval_dir`` (class folders) adds accuracies. A drop beyond ``max_drop`` raises
    QuantizeError and leaves ``out`` untouched; with ``force`` the file is written and ``passed`` is False.
    ``speed_seconds`` bounds the FP32 vs quantized latency measurement (batch 1, one thread; 0 skips it);
    below MIN_SPEEDUP the result's ``recommendation`` says to ship FP32.
    """
    import onnx

    start = time.perf_counter()
    if method not in METHODS:
        raise QuantizeError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if mode not in MODES:
        raise QuantizeError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if fp16 and mode == "dynamic":
        raise QuantizeError("--fp16 and --mode dynamic are alternatives; choose one")
    if calib_size < 1:
        raise QuantizeError(f"calib_size must be >= 1, got {calib_size}")
    if speed_seconds < 0:
        raise QuantizeError(f"speed_seconds must be >= 0, got {speed_seconds}")
    if not 0 <= max_drop <= 1:
        raise QuantizeError(f"max_drop is a fraction in [0, 1] (0.01 = 1 point), got {max_drop}")
    if calib_dir is None and mode == "static" and not fp16:
        raise QuantizeError("static INT8 needs calibration images: give a folder of them (--calib DATA_DIR)")
    src = Path(model)
    proto, spec, kind = load_fp32(src)
    meta = G.read_metadata(proto)

    calib = np.zeros((0, spec.size, spec.size, 3), np.uint8)
    if calib_dir is not None:
        calib, _ = load_pixels(image_files(calib_dir, limit=calib_size, seed=seed), spec)
    evaluation = eval_set(eval_dir, spec) if eval_dir is not None else None

    precision = "fp16" if fp16 else ("int8-dynamic" if mode == "dynamic" else "int8")
    with tempfile.TemporaryDirectory(prefix="edgecnn-quant-") as work:
        tmp = Path(work) / "quant.onnx"
        if fp16:
            onnx.save(_fp16(proto), str(tmp))
        elif mode == "dynamic":
            _dynamic(src, tmp, per_channel=per_channel)
        else:
            # The softmax stays float: quantized probabilities would come in steps of 1/255.
            softmax = [n.name for n in proto.graph.node if n.op_type == "Softmax"]
            static_qdq(src, tmp, calib, spec, kind, method=method, per_channel=per_channel, exclude=softmax,
                       fp32_ops=fp32_ops)
        quant = onnx.load(str(tmp))
    del quant.metadata_props[:]  # onnxruntime's tools add their own bookkeeping keys; keep ours only
    G.set_metadata(quant, {**meta, META_PRECISION: precision})
    quant.producer_name = "edgecnn"
    data = quant.SerializeToString()
    fp32_bytes = src.stat().st_size

    # FP32 against the quantized model on the evaluation images, else on the calibration images; dynamic INT8
    # and FP16 need neither, and without images there is nothing to compare: agreement is then not measured.
    pixels = evaluation[0] if evaluation is not None else calib
    on = "eval" if evaluation is not None else ("calibration" if len(calib) else "none")
    agreement: float | None = None
    fp32_acc: float | None = None
    quant_acc: float | None = None
    if len(pixels):
        ref, new = predict(src, pixels, spec, kind), predict(data, pixels, spec, kind)
        agreement = float((ref.argmax(1) == new.argmax(1)).mean())
        if evaluation is not None:
            labels = evaluation[1]
            fp32_acc, quant_acc = float((ref.argmax(1) == labels).mean()), float((new.argmax(1) == labels).mean())
    drop = None if fp32_acc is None or quant_acc is None else fp32_acc - quant_acc
    failed = drop is not None and drop > max_drop + 1e-12
    result = QuantizeResult(path=Path(out), written=False, passed=not failed, precision=precision,
                            method=method if precision == "int8" else None, per_channel=per_channel,
                            calib_images=len(calib), fp32_bytes=fp32_bytes, quant_bytes=len(data),
                            size_ratio=fp32_bytes / len(data), agreement=agreement, agreement_on=on,
                            agreement_images=len(pixels), fp32_accuracy=fp32_acc, quant_accuracy=quant_acc,
                            accuracy_drop=drop, eval_images=len(pixels) if evaluation is not None else 0)
    if speed_seconds > 0:
        # Any image will do for a latency: a CNN's cost does not depend on the pixel values.
        sample = pixels[:1] if len(pixels) else np.full((1, spec.size, spec.size, 3), 128, np.uint8)
        result.fp32_ms, result.quant_ms = measure_latency([src, data], spec, kind, sample, seconds=speed_seconds)
        result.speedup = result.fp32_ms / result.quant_ms
        result.recommendation = speed_advice(result)
    if not failed or force:
        with atomic_path(out) as path:
            path.write_bytes(data)
        result.written = True
    result.seconds = time.perf_counter() - start
    if failed and not force:
        raise QuantizeError(f"{drop_message(result, max_drop)}; {out} not written (use --force to keep it, "
                            "or try --method entropy, a larger --calib-size)")
    return result


def drop_message(result: QuantizeResult, max_drop: float) -> str:
    assert result.accuracy_drop is not None, "a drop is measured only with an evaluation set"
    return (f"accuracy drops {result.accuracy_drop * 100:.2f} points (FP32 {result.fp32_accuracy:.4f} -> "
            f"{result.precision} {result.quant_accuracy:.4f}), more than the allowed {max_drop * 100:.2f}")
