"""Evaluation of a `.pt` checkpoint or an `.onnx` model on a class-folder tree.

    report = evaluate("runs/shapes/best.pt", "data/shapes/val")
    report.accuracy, report.confusion

Classes are matched by name: a folder whose classes come in another order, or lack some of the model's
classes, is still scored right. Both kinds of model see the images through the runtime's preprocess.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import ECE_BINS, expected_calibration_error, nll_from_probs
from .data import DatasetError, EvalSet, Sample, class_samples
from .runtime.spec import PreprocessSpec

Predictor = Callable[[np.ndarray], np.ndarray]  # (N, H, W, 3) uint8 -> (N, classes) scores


@dataclass
class EvalReport:
    model: str
    labels: tuple[str, ...]
    n: int
    accuracy: float
    confusion: np.ndarray  # rows = true class, columns = predicted, in label order
    per_class: dict[str, dict[str, float]]
    failures: list[tuple[str, str]] = field(default_factory=list)
    predictions: np.ndarray | None = None  # (n, classes) probabilities, in sample order
    targets: np.ndarray | None = None
    paths: list[str] = field(default_factory=list)
    ece: float | None = None  # expected calibration error over calibration.ECE_BINS equal-width bins
    nll: float | None = None  # mean negative log-likelihood of the true class

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "accuracy": self.accuracy,
            "n": self.n,
            "labels": list(self.labels),
            "per_class": self.per_class,
            "confusion": self.confusion.tolist(),
            "failed": [{"path": p, "error": e} for p, e in self.failures],
            "ece": self.ece,
            "ece_bins": ECE_BINS,
            "nll": self.nll,
        }


def load_predictor(model_path: str | os.PathLike, *, device: str = "cpu", threads: int | None = None) -> tuple[PreprocessSpec, Predictor]:
    """A function from uint8 NHWC pixels to class probabilities, and the model's spec."""
    path = Path(model_path)
    if path.suffix == ".onnx":
        from .runtime import Classifier

        clf = Classifier(path, device=device, threads=threads)
        return clf.spec, clf.predict_pixels
    if path.suffix in (".pt", ".pth"):
        import torch

        from .checkpoint import load_checkpoint
        from .models.inputs import pixels_to_tensor

        ckpt = load_checkpoint(path)
        model = ckpt.build_model()
        spec = ckpt.spec
        dev = torch.device("cpu")

        @torch.no_grad()
        def predict(pixels: np.ndarray) -> np.ndarray:
            logits = model(pixels_to_tensor(torch.from_numpy(pixels), spec, dev))
            return torch.softmax(logits, dim=1).numpy()

        return spec, predict
    raise ValueError(f"{path}: expected a .pt checkpoint or an .onnx model")


def confusion_metrics(confusion: np.ndarray, labels: tuple[str, ...]) -> dict[str, dict[str, float]]:
    per_class = {}
    for i, label in enumerate(labels):
        tp = float(confusion[i, i])
        support = float(confusion[i].sum())
        predicted = float(confusion[:, i].sum())
        per_class[label] = {
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
            "support": int(support),
        }
    return per_class


def evaluate(
    model_path: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    threads: int | None = None,
) -> EvalReport:
    """Score ``model_path`` on ``data_dir`` (a folder per class; a ``val/`` inside it is used when present)."""
    spec, predict = load_predictor(model_path, device=device, threads=threads)
    root, samples = class_samples(data_dir, spec.labels)
    return evaluate_samples(model_path, spec, predict, samples, batch_size=batch_size, where=f"{root}: ")


def evaluate_samples(
    model_path: str | os.PathLike,
    spec: PreprocessSpec,
    predict: Predictor,
    samples: Sequence[Sample],
    *,
    batch_size: int = 64,
    where: str = "",
    cache_dir: str | os.PathLike | None = None,
) -> EvalReport:
    """Score ``predict`` (from load_predictor) on (path, class index) ``samples``, decoded as the runtime does.

    ``cache_dir``: read the decoded images from the shared cache there (the entry training's validation built)
    instead of decoding them into this process's memory once more.
    """
    dataset = EvalSet(samples, spec, cache_dir=cache_dir)
    if len(dataset) == 0:
        raise DatasetError(f"{where}none of the {len(samples)} images could be read")
    probs = []
    for start in range(0, len(dataset), batch_size):
        # list(): np.stack's stubs take a Sequence, which an ndarray (a cached set) is not; the rows are views.
        probs.append(predict(np.stack(list(dataset.images[start : start + batch_size]))))
    predictions = np.concatenate(probs)
    targets = np.asarray(dataset.targets)
    n = len(spec.labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (targets, predictions.argmax(1)), 1)
    failed = {str(p) for p, _ in dataset.failures}
    return EvalReport(
        model=str(model_path),
        labels=spec.labels,
        n=len(dataset),
        accuracy=float(np.trace(confusion) / confusion.sum()),
        confusion=confusion,
        per_class=confusion_metrics(confusion, spec.labels),
        failures=[(str(p), e) for p, e in dataset.failures],
        predictions=predictions,
        targets=targets,
        paths=[str(p) for p, _ in samples if str(p) not in failed],
        ece=expected_calibration_error(predictions, targets),
        nll=nll_from_probs(predictions, targets),
    )
