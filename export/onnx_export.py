"""Checkpoint -> one self-contained, verified ONNX file with uint8 input and a softmax output.

    result = export_onnx("runs/shapes/best.pt", "model.onnx", verify_dir="data/shapes/val")
    result.max_prob_diff, result.path

The float NCHW network is exported by torch's (dynamo) exporter with BatchNorm folded; the uint8
pre-processing and the softmax are then added with onnx.helper, so the graph has no shape arithmetic.
The file is written only after onnxruntime and PyTorch agreed on every image.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..fileio import atomic_path
from ..runtime.preprocess import ImageError, is_image_file, preprocess
from ..runtime.spec import (
    INPUT_FLOAT_NCHW,
    INPUT_UINT8_NHWC,
    META_ARCH,
    META_CHECKPOINT_SHA256,
    META_INPUT,
    META_OOD,
    META_OPSET,
    META_PRECISION,
    META_SPEC,
    META_TEMPERATURE,
    META_VERSION,
    PreprocessSpec,
)
from . import graph as G

if TYPE_CHECKING:
    import onnx
    import torch.nn as nn

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # torch's dynamo exporter's native opset; onnxruntime >= 1.14 runs it (Raspberry Pi wheels too)
OPSETS = range(18, 22)
INPUTS = (INPUT_UINT8_NHWC, INPUT_FLOAT_NCHW)
TOLERANCE = 1e-4  # largest allowed |p_onnx - p_torch| of any class probability
RANDOM_IMAGES = 16
MAX_VERIFY_IMAGES = 2000
VERIFY_BATCH = 32  # images per onnxruntime call while verifying: bounded memory at any input size


class ExportError(ValueError):
    """An export that cannot be done or did not verify; the message says which and why."""


@dataclass
class ExportResult:
    path: Path
    arch: str
    input: str  # uint8-nhwc or float-nchw
    opset: int
    batch: int | str  # "dynamic" or a fixed batch size
    size_bytes: int
    checkpoint_sha256: str
    verified_images: int  # random + real images compared with PyTorch
    real_images: int  # of which from verify_dir
    max_prob_diff: float  # largest |p_onnx - p_torch| seen
    top1_agreement: float  # share of images with the same top-1 (1.0 unless a torch tie)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every Conv2d -> BatchNorm2d pair of an nn.Sequential into the Conv2d (eval mode, in place)."""
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
    return model


def _check_options(opset: int, batch: int | str, input: str) -> int | str:
    if input not in INPUTS:
        raise ExportError(f"input must be one of {', '.join(INPUTS)}, got {input!r}")
    if opset not in OPSETS:
        raise ExportError(f"opset {opset} is not supported; use {OPSETS.start}..{OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    if batch == "dynamic":
        return "batch"
    if isinstance(batch, str) and batch.isdigit():
        batch = int(batch)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ExportError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    return batch


def _torch_to_onnx(model: nn.Module, size: int, *, opset: int, dynamic: bool, batch: int) -> onnx.ModelProto:
    import contextlib
    import io
    import warnings

    import torch

    example = torch.zeros(2 if dynamic else batch, 3, size, size)  # batch 2: a batch of 1 would be specialized
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic else None  # by position: any forward() arg name
    # The exporter prints progress lines and logs/warns about its own internals; none of it concerns the user.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            for logger in loggers:
                logger.setLevel(logging.ERROR)
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                        dynamic_shapes=dynamic_shapes, input_names=[G.INPUT_FLOAT],
                                        output_names=[G.OUTPUT_LOGITS], external_data=False, optimize=True,
                                        verbose=False)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    assert program is not None, "torch.onnx.export(dynamo=True) returns the program"
    return program.model_proto


def build_graph(model: nn.Module, spec: PreprocessSpec, *, opset: int = DEFAULT_OPSET, batch: int | str = "batch",
                input: str = INPUT_UINT8_NHWC, fold_scale: bool = True) -> onnx.ModelProto:
    """The ONNX graph of ``model`` (BatchNorm already folded) with edgecnn's input and outputs.

    ``fold_scale=False`` keeps the 1/(255*std) Mul as a node (for benchmarks/quant_options.py).
    """
    import onnx

    dynamic = isinstance(batch, str)
    proto = _torch_to_onnx(model, spec.size, opset=opset, dynamic=dynamic, batch=batch if isinstance(batch, int) else 1)
    G.simplify(proto)
    if input == INPUT_UINT8_NHWC:
        G.add_uint8_preprocessing(proto, spec, batch=batch, fold_scale=fold_scale)
    G.add_softmax(proto)
    G.set_batch_dim(proto, batch)
    proto.producer_name, proto.doc_string = "edgecnn", ""
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    leftovers = G.shape_ops(proto) + [n.op_type for n in proto.graph.node if n.op_type == "BatchNormalization"]
    assert not leftovers, f"unexpected operators in the exported graph: {leftovers}"
    return proto


def verification_images(spec: PreprocessSpec, verify_dir: str | os.PathLike | None, *, seed: int = 0) -> tuple[np.ndarray, int]:
    """Random uint8 images, then the images of ``verify_dir`` through the runtime's preprocess."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (RANDOM_IMAGES, spec.size, spec.size, 3), dtype=np.uint8)]
    real = 0
    if verify_dir is not None:
        root = Path(verify_dir)
        if not root.is_dir():
            raise ExportError(f"{root}: verification folder not found")
        files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))[:MAX_VERIFY_IMAGES]
        pixels = []
        for path in files:
            try:
                pixels.append(preprocess(path, spec))
            except ImageError as exc:
                log.warning("skipped in verification: %s", exc)
        if not pixels:
            raise ExportError(f"{root}: no readable images to verify with (searched {', '.join(sorted({'.png', '.jpg', '.jpeg'}))} ...)")
        images.append(np.stack(pixels))
        real = len(pixels)
    return np.concatenate(images), real


def compare(reference: np.ndarray, candidate: np.ndarray, *, tolerance: float = TOLERANCE) -> tuple[float, float, list[int]]:
    """(max |difference|, top-1 agreement, indices of real disagreements).

    A top-1 difference counts as a disagreement unless the reference itself has a tie, its first two
    probabilities closer than ``tolerance``: then either answer is right to within the tolerance.
    """
    diff = float(np.abs(reference - candidate).max()) if reference.size else 0.0
    top_ref, top_new = reference.argmax(1), candidate.argmax(1)
    ordered = np.sort(reference, axis=1)
    gap = ordered[:, -1] - ordered[:, -2] if reference.shape[1] > 1 else np.ones(len(reference))
    bad = [int(i) for i in np.flatnonzero((top_ref != top_new) & (gap >= tolerance))]
    return diff, float((top_ref == top_new).mean()) if len(reference) else 1.0, bad


def export_onnx(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    batch: int | str = "dynamic",
    input: str = INPUT_UINT8_NHWC,
    verify_dir: str | os.PathLike | None = None,
    tolerance: float = TOLERANCE,
) -> ExportResult:
    """Export ``checkpoint`` to ``out`` and verify it against PyTorch; ``out`` is replaced only if it verified."""
    # Here, not at the top: importing edgecnn.export stays cheap (the runtime's classifier loads onnxruntime).
    import onnx
    import torch

    from .. import __version__
    from ..checkpoint import load_checkpoint
    from ..models.inputs import pixels_to_tensor
    from ..runtime.classifier import Classifier

    start = time.perf_counter()
    dim = _check_options(opset, batch, input)
    ckpt = load_checkpoint(checkpoint)
    spec, reference = ckpt.spec, ckpt.build_model()
    folded = fold_batchnorm(ckpt.build_model())
    proto = build_graph(folded, spec, opset=opset, batch=dim, input=input)
    sha = ckpt.sha256()
    G.set_metadata(proto, {
        META_SPEC: spec.to_json(),
        META_INPUT: input,
        META_ARCH: ckpt.arch,
        META_VERSION: __version__,
        META_CHECKPOINT_SHA256: sha,
        META_OPSET: str(opset),
        META_PRECISION: "fp32",
    })
    if "ood" in ckpt.data:  # the unknown-input rule fitted after training (edgecnn.calibration)
        G.set_metadata(proto, {META_OOD: json.dumps(ckpt.data["ood"], sort_keys=True)})
    if "calibration" in ckpt.data:
        G.set_metadata(proto, {META_TEMPERATURE: repr(float(ckpt.data["calibration"]["temperature"]))})
    data = proto.SerializeToString()

    pixels, real = verification_images(spec, verify_dir)
    # The runtime's own path from pixels to probabilities, the one the board runs: padding, layout, softmax.
    got = Classifier(data, device="cpu").predict_pixels(pixels, batch_size=VERIFY_BATCH)
    with torch.no_grad():
        expected = torch.cat([torch.softmax(reference(pixels_to_tensor(torch.from_numpy(pixels[i : i + 64]), spec,
                                                                      torch.device("cpu"))), dim=1)
                              for i in range(0, len(pixels), 64)]).numpy()
    diff, agreement, bad = compare(expected, got, tolerance=tolerance)
    if diff > tolerance or bad:
        raise ExportError(f"verification failed, nothing written to {out}: onnxruntime and PyTorch differ by up to "
                          f"{diff:.2e} (tolerance {tolerance:.0e}) with {len(bad)} top-1 disagreement(s) on "
                          f"{len(pixels)} images")
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        onnx.checker.check_model(str(tmp), full_check=True)  # the file as written, not only the proto
    return ExportResult(path=Path(out), arch=ckpt.arch, input=input, opset=opset,
                        batch="dynamic" if dim == "batch" else dim, size_bytes=len(data), checkpoint_sha256=sha,
                        verified_images=len(pixels), real_images=real, max_prob_diff=diff, top1_agreement=agreement,
                        seconds=time.perf_counter() - start)
