"""The training report: report.html in the run folder with curves, confusion, kernels and the mistakes.

    write_training_report("runs/shapes", val_samples=split.val)      # at the end of training
    write_training_report("runs/shapes", data_dir="data/shapes")     # later, for a finished run

The pictures go to RUN_DIR/report/; report.html refers to them (and to curves.png) by relative paths,
so the run folder can be copied or zipped and still be read offline.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import DatasetError, Sample
from .evaluate import EvalReport, evaluate, evaluate_samples, load_predictor
from .fileio import atomic_path, atomic_write_text
from .runtime.spec import PreprocessSpec
from .visualize import check_references, figure, html_page, load_view, render_kernels, render_softmax

MAX_EXAMPLES = 6  # misclassified validation images shown


def _split_val_samples(run_dir: Path, data_dir: Path, labels: tuple[str, ...]) -> list[Sample] | None:
    """The validation images of a run whose split was drawn from class folders (recorded in split.json)."""
    record = run_dir / "split.json"
    if (data_dir / "val").is_dir() or not record.is_file():
        return None
    index = {label: i for i, label in enumerate(labels)}
    samples = []
    for rel in json.loads(record.read_text())["val"]:
        label = Path(rel).parts[0]
        if label in index:
            samples.append((data_dir / rel, index[label]))
    return samples


def write_training_report(
    run_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    val_samples: Sequence[Sample] | None = None,
    max_examples: int = MAX_EXAMPLES,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Write RUN_DIR/report.html for the run's best.pt; returns its path.

    The validation images come from ``val_samples`` (what training used), else from ``data_dir`` (its
    val/ folder, or the split recorded in split.json). With neither, the report shows the confusion
    matrix stored in best.pt and no example images. ``cache_dir``: the decoded-image cache that training used.
    """
    from .checkpoint import load_checkpoint
    from .plot import heatmap

    run = Path(run_dir)
    best = run / "best.pt"
    ckpt = load_checkpoint(best)
    labels = ckpt.spec.labels
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    folder = run / "report"
    folder.mkdir(parents=True, exist_ok=True)

    scores: EvalReport | None = None
    if val_samples is None and data_dir is not None:
        val_samples = _split_val_samples(run, Path(data_dir), labels)
        if val_samples is None:
            scores = evaluate(best, data_dir)
    if scores is None and val_samples is not None:
        spec, predict = load_predictor(best)
        scores = evaluate_samples(best, spec, predict, val_samples, where="validation set: ", cache_dir=cache_dir)

    if scores is not None:
        assert scores.targets is not None, "evaluate() keeps the per-image targets"
        confusion, accuracy = scores.confusion, scores.accuracy
        source = f"recomputed on {len(scores.targets)} validation images"
    elif "confusion" in ckpt.data:
        confusion = np.asarray(ckpt.data["confusion"])
        accuracy = float(ckpt.data.get("val_accuracy", np.trace(confusion) / max(1, confusion.sum())))
        source = "as stored in best.pt at its epoch"
    else:
        raise DatasetError(f"{best} stores no confusion matrix; pass data_dir= to compute one")

    with atomic_path(folder / "confusion.png") as tmp:
        heatmap(confusion.tolist(), labels, title=f"confusion, accuracy {accuracy:.3f}").save(tmp, format="PNG")
    view = load_view(best)
    render_kernels(view).save(folder / "kernels.png")

    rows = [
        ("architecture", f"{ckpt.arch}, input {ckpt.spec.size}x{ckpt.spec.size}"),
        ("classes", ", ".join(labels)),
        ("best epoch", f"{ckpt.epoch} of {len(metrics.get('epochs', [])) or '?'}"),
        ("validation accuracy", f"{accuracy:.4f} ({source})"),
    ]
    if "val_accuracy" in metrics and abs(metrics["val_accuracy"] - accuracy) > 1e-9:
        rows.append(("metrics.json says", f"{metrics['val_accuracy']:.4f}"))
    calibration = ckpt.data.get("calibration")  # written by edgecnn.calibration after training
    if calibration:
        rows.append(("calibration", f"temperature {calibration['temperature']:.3f}; ECE ({calibration['bins']} bins) "
                                    f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}, NLL "
                                    f"{calibration['nll_before']:.4f} -> {calibration['nll_after']:.4f}"))
    table = "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows) + "</table>"

    parts = [table]
    files = ["report/confusion.png", "report/kernels.png"]
    if (run / "curves.png").is_file():
        parts.append("<h2>Learning curves</h2>" + figure("curves.png", "Loss and accuracy per epoch, training and validation. "
                                                           "A validation curve that turns up while training keeps falling means over-fitting."))
        files.append("curves.png")
    parts.append("<h2>Confusion matrix</h2>" + figure("report/confusion.png", f"Rows: true class, columns: predicted ({source}). "
                                                       "Off-diagonal cells are the mistakes, shaded by their share of the row."))
    if calibration and (run / "reliability.png").is_file():
        parts.append("<h2>Calibration</h2>" + figure("reliability.png", "Reliability diagram on the validation set, before and "
                                                     "after temperature scaling: accuracy per confidence bin (bars) against the "
                                                     "diagonal of perfect calibration; red boxes are the gaps, the numbers the "
                                                     "images per bin. Bars above the diagonal: underconfident."))
        files.append("reliability.png")
    parts.append("<h2>Learned kernels</h2>" + figure("report/kernels.png", f"The first convolution's filters ({view.kernel_note}) "
                                                      "and the magnitude of each deeper filter."))
    if scores is None:
        parts.append("<h2>Mistakes</h2><p>No validation images were given to this report, so none are shown; "
                     "write it with <code>data_dir=</code> to include them.</p>")
    else:
        gallery, shown = _examples(scores, ckpt.spec, folder, max_examples)
        files += shown
        parts.append(gallery)
    for old in folder.glob("example_*.png"):  # pictures from an earlier report of this run that this one no longer shows
        if f"report/{old.name}" not in files:
            old.unlink()
    check_references(run, files)
    target = run / "report.html"
    atomic_write_text(target, html_page(f"Training report: {run.name}", "\n".join(parts)))
    return target


def _examples(scores: EvalReport, spec: PreprocessSpec, folder: Path, max_examples: int) -> tuple[str, list[str]]:
    """The most confidently wrong validation images with their softmax bars; the closest calls if none is wrong."""
    from .runtime.decode import margin
    from .runtime.preprocess import ImageError, preprocess

    probs, targets = scores.predictions, scores.targets
    assert probs is not None and targets is not None, "evaluate() keeps the per-image scores"
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != targets)
    if len(wrong):
        order = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:max_examples]
        heading = (f"<h2>Mistakes</h2><p>{len(wrong)} of {len(targets)} validation images are misclassified; "
                   f"the {len(order)} most confidently wrong are shown, with what the model saw.</p>")
    else:
        margins = np.array([margin(p) for p in probs])
        order = np.argsort(margins, kind="stable")[:max_examples]
        heading = ("<h2>Closest calls</h2><p>Every validation image is classified correctly; these are the "
                   f"{len(order)} with the smallest margin between the first and second class.</p>")
    cells, files = [], []
    for k, i in enumerate(order):
        path = Path(scores.paths[i])
        try:
            pixels = preprocess(path, spec)
        except ImageError:
            continue  # it was read for scoring a moment ago; if it vanished since, the report goes on without it
        true = scores.labels[targets[i]]
        picture, sv = render_softmax(probs[i], scores.labels, pixels=pixels, title=path.name, true_label=true)
        name = f"example_{k}.png"
        picture.save(folder / name)
        files.append(f"report/{name}")
        cells.append(figure(f"report/{name}", f"{path}: true {true}, predicted {sv.winner} ({sv.probs[0]:.1%})", width=560))
    return heading + '<div class="gallery">' + "\n".join(cells) + "</div>", files

