"""Each benched model file's accuracy on a labelled folder (`bench --eval DIR`), scored as `edgecnn eval` scores it.

    scores = accuracies([("model.onnx", "onnxruntime"), ("model.int8.onnx", "onnxruntime")], "data/val")
    scores[("model.int8.onnx", "onnxruntime")].accuracy

One score per (file, backend), shared by every batch/thread row of that file. onnxruntime files and torch
checkpoints go through ``evaluate.evaluate`` itself (the runtime's Classifier, the PyTorch path of `edgecnn
eval`); OpenVINO rows score the OpenVINO-compiled model on the same samples, through ``evaluate_samples``.
Where a score cannot be had, it stays None with the reason: never another backend's number in its place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .rows import BenchError, WorkerError

if TYPE_CHECKING:
    from ..evaluate import EvalReport

EVAL_BATCH = 64  # images per inference call while scoring (`edgecnn eval`'s default)


class OpenVinoMissing(RuntimeError):
    """The openvino package is not installed: OpenVINO rows get no score (and say how to install it)."""


@dataclass(frozen=True)
class Accuracy:
    accuracy: float | None  # top-1 on the folder; None when it could not be measured (see note)
    images: int | None  # images scored (unreadable files are skipped, as `edgecnn eval` skips them)
    note: str = ""  # why accuracy is None


def check_eval_dir(eval_dir: str | os.PathLike) -> Path:
    """The --eval folder, checked to exist before anything is measured."""
    root = Path(eval_dir)
    if not root.is_dir():
        raise BenchError(f"{root}: not a folder; --eval takes a folder with one sub-folder of images per class "
                         "(or a dataset root holding val/)")
    return root


def accuracies(keys: Iterable[tuple[str, str]], eval_dir: str | os.PathLike, *, device: str = "cpu",
               progress: Callable[[str], None] | None = None) -> dict[tuple[str, str], Accuracy]:
    """Accuracy of every (model file, backend) on ``eval_dir``, each computed once.

    Raises BenchError when the folder cannot be scored as it is (no images, a class the model does not know);
    a model that cannot be loaded gets an Accuracy with a note, like its bench row.
    """
    from ..checkpoint import CheckpointError
    from ..data import DatasetError
    from ..runtime import ModelError

    say = progress or (lambda _msg: None)
    out: dict[tuple[str, str], Accuracy] = {}
    for model, backend in keys:
        if (model, backend) in out:
            continue
        say(f"scoring {Path(model).name} ({backend}) on {eval_dir}")
        try:
            report = _openvino_report(model, eval_dir) if backend == "openvino" else _report(model, eval_dir, device)
        except DatasetError as exc:  # the folder does not fit this model: no row's accuracy would mean anything
            raise BenchError(f"--eval {exc}") from None
        except (ModelError, CheckpointError, WorkerError, OpenVinoMissing) as exc:  # the row says so too
            out[(model, backend)] = Accuracy(None, None, f"not measured: {exc}")
            continue
        out[(model, backend)] = Accuracy(report.accuracy, report.n)
    return out


def _report(model: str, eval_dir: str | os.PathLike, device: str) -> EvalReport:
    """`edgecnn eval` on the file: the runtime's Classifier for .onnx, the checkpoint's PyTorch model for .pt."""
    from ..evaluate import evaluate

    return evaluate(model, eval_dir, batch_size=EVAL_BATCH, device="cpu" if model.endswith((".pt", ".pth")) else device)


def _openvino_report(model: str, eval_dir: str | os.PathLike) -> EvalReport:
    """The file compiled by OpenVINO as its bench rows run it, scored on the samples `edgecnn eval` would use.

    The Classifier supplies what the file says about itself (spec, input layout and dtype, which output holds
    the scores); only the inference is OpenVINO's.
    """
    try:
        import openvino  # noqa: F401
    except ImportError:
        from .runners import OPENVINO_INSTALL

        raise OpenVinoMissing(OPENVINO_INSTALL) from None
    import numpy as np

    from ..data import class_samples
    from ..evaluate import evaluate_samples
    from ..runtime import Classifier, looks_like_probabilities, softmax
    from ..runtime.preprocess import batches
    from .runners import openvino_compile

    clf = Classifier(model, device="cpu")
    root, samples = class_samples(eval_dir, clf.spec.labels)
    batch = clf.fixed_batch or EVAL_BATCH
    compiled = openvino_compile(model, os.cpu_count() or 1, batch)
    port = compiled.outputs[[o.name for o in clf.session.get_outputs()].index(clf.output_name)]

    def predict(pixels: np.ndarray) -> np.ndarray:
        # The compiled batch is fixed: a short chunk is padded and only its real rows kept.
        parts = [np.asarray(compiled({0: clf.model_input(chunk)})[port], dtype=np.float32).reshape(len(chunk), -1)[:real]
                 for chunk, real in batches(pixels, batch, pad=True)]
        scores = np.concatenate(parts)
        # Classifier.predict_pixels' decoding: a probabilities output as it is, logits through softmax.
        if clf.outputs_probabilities or looks_like_probabilities(scores):
            return scores
        return softmax(scores).astype(np.float32, copy=False)

    return evaluate_samples(model, clf.spec, predict, samples, batch_size=batch, where=f"{root}: ")
