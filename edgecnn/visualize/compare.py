"""FP32 against its quantized form, layer by layer: which reference to use, and how far each map moved.

    reference = reference_beside("model.int8.onnx")         # model.onnx, when it sits beside it
    diffs = compare_layers(fp32_acts, int8_acts)             # one LayerDiff per stage both show
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .views import Activations, ModelView, VisualizeError

QUANTIZED_SUFFIXES = (".int8.onnx", ".fp16.onnx")  # what `edgecnn quantize` appends to MODEL.onnx


@dataclass(frozen=True)
class LayerDiff:
    """How far the quantized model's map of one layer is from the reference's, on one image."""

    name: str  # the layer, e.g. "stage3"
    reference_tensor: str  # where each map was taken (ONNX tensor name or module path)
    tensor: str
    cosine: float  # of the two maps as vectors: 1.0 = the same pattern
    relative_error: float  # ||quantized - reference|| / ||reference||
    max_abs_error: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reference_beside(model_path: str | os.PathLike) -> Path | None:
    """The FP32 model a quantized one came from, when it lies beside it under quantize's default name."""
    path = Path(model_path)
    for suffix in QUANTIZED_SUFFIXES:
        if path.name.endswith(suffix):
            fp32 = path.with_name(path.name[: -len(suffix)] + ".onnx")
            return fp32 if fp32.is_file() else None
    return None


def check_comparable(reference: ModelView, view: ModelView, reference_path: Path, model_path: Path) -> None:
    """Both models must read the same pixels and name the same classes, or a comparison means nothing."""
    if reference.spec != view.spec:
        raise VisualizeError(f"{reference_path} and {model_path} preprocess differently (size, crop, mean, std or labels); "
                             "--compare takes the FP32 model the quantized one was made from")


def _diff(ref: np.ndarray, q: np.ndarray) -> tuple[float, float, float]:
    a, b = ref.astype(np.float64).ravel(), q.astype(np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    # Two all-zero maps agree perfectly; one all-zero map against another does not.
    cosine = float(a @ b / (na * nb)) if na and nb else float(na == nb)
    rel = float(np.linalg.norm(b - a) / na) if na else float(nb > 0)
    return cosine, rel, float(np.abs(b - a).max()) if a.size else 0.0


def compare_layers(reference: Activations, acts: Activations) -> list[LayerDiff]:
    """One LayerDiff per layer, paired by name; the two models must show the same layers at the same shapes."""
    if [a.name for a in reference] != [a.name for a in acts]:
        raise VisualizeError(f"the models show different layers ({', '.join(a.name for a in reference)} against "
                             f"{', '.join(a.name for a in acts)}): not the same network")
    diffs = []
    for ref, act in zip(reference, acts, strict=True):
        if ref.maps.shape != act.maps.shape:
            raise VisualizeError(f"{ref.name}: maps of shape {ref.maps.shape} against {act.maps.shape}: not the same network")
        diffs.append(LayerDiff(ref.name, ref.tensor, act.tensor, *_diff(ref.maps, act.maps)))
    return diffs
