"""Calibrated probabilities: temperature scaling (Guo et al., 2017) folded into the last layer, ECE, NLL, OOD threshold.

    t = fit_temperature(val_logits, val_targets)          # one T > 0 minimizing the validation NLL
    expected_calibration_error(softmax(logits / t), targets)  # ECE over ECE_BINS equal-width bins
    calibrate_run("runs/shapes", val_set)                 # after training: fold T into best.pt, record it

Dividing the logits by T never changes the argmax, so accuracy is untouched. Folding 1/T into the
final nn.Linear (weight and bias) means export, INT8 quantization and the runtime need no change.
Label smoothing makes models underconfident, so T < 1 (sharper probabilities) is the usual result.
The math here is numpy only; torch is imported inside the functions that touch a model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .runtime.decode import OOD_SCORES, OodRule, log_softmax, ood_score, pick_ood_threshold, softmax

if TYPE_CHECKING:
    import torch.nn as nn
    from PIL import Image

    from .data import EvalSet

ECE_BINS = 15  # equal-width confidence bins of the expected calibration error (Guo et al. use 15)
T_RANGE = (0.05, 20.0)  # the temperature search interval; a fit at either end means the data cannot pin T
DEFAULT_RECALL = 0.95  # in-distribution recall the OOD threshold is picked for
# Chosen by benchmarks/calibration.py (AUROC on synthetic classes held out of training, INT8 runtime; see
# benchmarks/results/calibration.md): with label smoothing (the training default) the logits' scale carries
# little, and the max softmax probability beat energy and max logit. All three cost one reduction on a board.
DEFAULT_OOD_SCORE = "max_prob"


@dataclass(frozen=True)
class CalibrationResult:
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    bins: int
    n: int  # images the temperature was fitted on
    accuracy: float  # top-1 on those images, the same before and after
    ood: dict[str, Any] | None = None  # OodRule.to_dict() picked on the calibrated logits

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------- the measures
def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``targets`` under softmax(logits / temperature)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-logp[np.arange(len(targets)), targets].mean())


def nll_from_probs(probs: np.ndarray, targets: np.ndarray) -> float:
    """The same from probabilities (what a model that only outputs a softmax gives); clipped at 1e-12."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: mean confidence, accuracy and count (empty bins: NaN, NaN, 0)."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(1)
    correct = (probs.argmax(1) == np.asarray(targets)).astype(np.float64)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 cannot occur (>= 1/classes).
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    return mean_conf, accuracy, counts.astype(np.int64)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over ``bins`` equal-width confidence bins."""
    mean_conf, accuracy, counts = reliability(probs, targets, bins)
    filled = counts > 0
    if not filled.any():
        return 0.0
    return float(np.sum(counts[filled] * np.abs(accuracy[filled] - mean_conf[filled])) / counts.sum())


def fit_temperature(logits: np.ndarray, targets: np.ndarray, *, tol: float = 1e-5) -> float:
    """The T > 0 minimizing NLL(softmax(logits / T)): golden-section search on log T over ``T_RANGE``.

    The NLL of a temperature-scaled softmax is unimodal in log T for all practical logits, so a 1-D
    bracketing search finds the minimum without gradients; 40-odd evaluations of the whole set.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(targets) or len(targets) == 0:
        raise ValueError(f"need (N, classes) logits and N targets, got {logits.shape} and {targets.shape}")

    def f(log_t: float) -> float:
        return nll(logits, targets, math.exp(log_t))

    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo + (1 - ratio) * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - ratio) * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    return float(math.exp((lo + hi) / 2))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling ``out_scores`` (positives, higher = more unknown) from ``in_scores``.

    The Mann-Whitney U statistic with ties counted as one half.
    """
    x = np.concatenate([np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)])
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    # Average ranks over ties.
    _, start, counts = np.unique(sorted_x, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    n_in, n_out = len(in_scores), len(out_scores)
    if not n_in or not n_out:
        raise ValueError("AUROC needs at least one in-distribution and one out-of-distribution score")
    u = ranks[n_in:].sum() - n_out * (n_out + 1) / 2
    return float(u / (n_in * n_out))


def summarize(logits: np.ndarray, targets: np.ndarray, temperature: float, *, bins: int = ECE_BINS,
              recall: float = DEFAULT_RECALL, score: str = DEFAULT_OOD_SCORE) -> CalibrationResult:
    """ECE/NLL before and after dividing by ``temperature``, and the OOD rule on the calibrated logits."""
    logits = np.asarray(logits, dtype=np.float64)
    after = logits / temperature
    rule = OodRule(score, pick_ood_threshold(ood_score(after, score), recall), recall)
    return CalibrationResult(
        temperature=float(temperature),
        ece_before=expected_calibration_error(softmax(logits), targets, bins),
        ece_after=expected_calibration_error(softmax(after), targets, bins),
        nll_before=nll(logits, targets),
        nll_after=nll(after, targets),
        bins=bins,
        n=len(targets),
        accuracy=float((logits.argmax(1) == targets).mean()),
        ood=rule.to_dict(),
    )


# ------------------------------------------------------------------------------------------- the model
def last_linear(model: nn.Module, size: int) -> tuple[str, nn.Linear]:
    """The nn.Linear whose output is the model's output (the logits), found by running the model once.

    Generic over edgecnn's families (``head.fc``) and torchvision's (``classifier[-1]``, ``fc``): every
    Linear is hooked and the one whose output tensor *is* the returned tensor wins, so a Linear inside
    an attention or squeeze-excitation block can never be mistaken for the head.
    """
    import torch
    import torch.nn as nn

    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = model(torch.zeros(2, 3, size, size, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for name, out in outputs.items():
        if out is result or (out.data_ptr() == result.data_ptr() and out.shape == result.shape):
            linear = model.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            return name, linear
    raise ValueError(f"{type(model).__name__}: its logits do not come straight from an nn.Linear, so a temperature "
                     "cannot be folded into it; train with --no-calibrate and calibrate the ONNX file instead "
                     "(`edgecnn calibrate`)")


def fold_temperature(model: nn.Module, temperature: float, size: int) -> str:
    """Divide the last Linear's weight and bias by ``temperature`` in place: logits become logits / T."""
    import torch

    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    name, linear = last_linear(model, size)
    with torch.no_grad():
        linear.weight.div_(temperature)
        if linear.bias is not None:
            linear.bias.div_(temperature)
    return name


def model_logits(model: nn.Module, images: Sequence[np.ndarray] | np.ndarray, spec: Any, *, batch_size: int = 128) -> np.ndarray:
    """(N, classes) float64 logits of ``model`` for uint8 NHWC pixels, on the CPU in eval mode."""
    import torch

    from .models.inputs import pixels_to_tensor

    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            pixels = torch.from_numpy(np.stack(list(images[start : start + batch_size])))
            out.append(model(pixels_to_tensor(pixels, spec, device)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, spec.num_classes))


def calibrate_run(run_dir: str | os.PathLike, val_set: EvalSet, *, recall: float = DEFAULT_RECALL,
                  score: str = DEFAULT_OOD_SCORE, say: Callable[[str], None] | None = None) -> CalibrationResult | None:
    """Fit T on ``val_set`` (the validation images training used), fold it into RUN_DIR/best.pt, record it.

    best.pt is rewritten atomically with the folded weights and a ``calibration`` entry (and ``ood``,
    the unknown-input rule, which export copies into the ONNX metadata); metrics.json gains the same
    ``calibration`` entry and RUN_DIR/reliability.png shows the reliability diagram before and after.
    A best.pt that is already calibrated (a resumed, finished run) is left alone: returns None.
    """
    from .checkpoint import load_checkpoint, save_checkpoint
    from .fileio import atomic_path, atomic_write_text
    from .plot import hstack

    run = Path(run_dir)
    best = run / "best.pt"
    ckpt = load_checkpoint(best)
    if "calibration" in ckpt.data:
        return None
    spec = ckpt.spec
    model = ckpt.build_model()
    logits = model_logits(model, val_set.images, spec)
    targets = np.asarray(val_set.targets, dtype=np.int64)
    temperature = fit_temperature(logits, targets)
    result = summarize(logits, targets, temperature, recall=recall, score=score)
    layer = fold_temperature(model, temperature, spec.size)

    folded = model_logits(model, val_set.images, spec)
    # The folded model must give exactly the scaled logits (float32 rounding aside), or nothing is written.
    assert np.allclose(folded, logits / temperature, rtol=1e-4, atol=1e-4), "folding the temperature changed the model"
    record = {k: v for k, v in result.to_dict().items() if k != "ood"} | {"layer": layer}
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(best, {**ckpt.data, "state_dict": weights, "calibration": record, "ood": result.ood})

    metrics_path = run / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["calibration"] = record
        metrics["ood"] = result.ood
        atomic_write_text(metrics_path, json.dumps(metrics, indent=1) + "\n")
    probs_before, probs_after = softmax(logits), softmax(logits / temperature)
    with atomic_path(run / "reliability.png") as tmp:
        hstack([reliability_diagram(probs_before, targets, title=f"before (T = 1), ECE {result.ece_before:.3f}"),
                reliability_diagram(probs_after, targets, title=f"after (T = {temperature:.3f}), ECE {result.ece_after:.3f}")]
               ).save(tmp, format="PNG")
    if say:
        say(f"calibration: T = {temperature:.3f} on {result.n} validation images; ECE {result.ece_before:.4f} -> "
            f"{result.ece_after:.4f}, NLL {result.nll_before:.4f} -> {result.nll_after:.4f} ({ECE_BINS} bins); "
            f"unknown-input threshold: {score} > {(result.ood or {}).get('threshold', 0.0):.3f} ({recall:.0%} recall)")
    return result


def calibrate_after_training(run_dir: str | os.PathLike, val_set: EvalSet, *, say: bool = True) -> CalibrationResult | None:
    """The step `edgecnn train` runs last (TrainConfig.calibrate): calibrate_run, and a finished training never
    fails here: a model whose logits cannot take a folded temperature keeps its weights, with a warning."""
    import logging
    import sys

    try:
        return calibrate_run(run_dir, val_set, say=(lambda line: print(line, file=sys.stderr)) if say else None)
    except ValueError as exc:
        logging.getLogger(__name__).warning("training finished, but was not calibrated: %s", exc)
        return None


# ------------------------------------------------------------------------------------------- ONNX files
@dataclass(frozen=True)
class OnnxCalibration:
    path: Path
    source: str  # "logits" (the graph's logits output) or "log-probabilities" (a model with only a softmax)
    previous_temperature: float  # already applied to the input model (1.0 when it had none)
    result: CalibrationResult

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "source": self.source, "previous_temperature": self.previous_temperature,
                **self.result.to_dict()}


def _graph_outputs(session: Any, clf: Any, images: np.ndarray, name: str, *, batch_size: int = 64) -> np.ndarray:
    """Output ``name`` of ``session`` (a graph with ``clf``'s input) for uint8 NHWC ``images``, in chunks it accepts."""
    from .runtime.preprocess import batches

    out = []
    for chunk, n in batches(images, clf.fixed_batch or batch_size, pad=bool(clf.fixed_batch)):
        scores = session.run([name], {clf.input_name: clf.model_input(chunk)})[0]
        out.append(np.asarray(scores, dtype=np.float64).reshape(len(chunk), -1)[:n])
    return np.concatenate(out)


def _insert_temperature(model: Any, logits: str | None, probs: str | None, temperature: float) -> None:
    """Make the graph's logits (and so its softmax) come out divided by ``temperature``, whatever its precision.

    With a logits tensor: a Div right after the node producing it, under the same name, so every
    consumer (the Softmax, the graph output) sees the scaled logits. With only probabilities: a Div in
    front of the Softmax that makes them; or, if none does, Softmax(Log(p) / T) appended.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    kinds = {o.name: o.type.tensor_type.elem_type for o in graph.output}
    elem = kinds.get(logits or probs or "", TensorProto.FLOAT)
    np_type = {TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}.get(elem, np.float32)
    t_name = "post.temperature"
    while any(t.name == t_name for t in graph.initializer):
        t_name += "_"
    graph.initializer.append(numpy_helper.from_array(np.asarray(temperature, dtype=np_type), t_name))

    def producer(name: str) -> tuple[int, Any]:
        for i, node in enumerate(graph.node):
            if name in node.output:
                return i, node
        raise ValueError(f"no node produces {name!r}; cannot insert a temperature")

    if logits is not None:
        target, nodes_after = logits, []
    else:
        assert probs is not None
        i, node = producer(probs)
        if node.op_type == "Softmax":
            scaled = f"{node.input[0]}.calibrated"
            graph.node.insert(i, helper.make_node("Div", [node.input[0], t_name], [scaled], name="post.calibrate"))
            node.input[0] = scaled
            return
        target = probs
        nodes_after = ["log", "softmax"]
    i, node = producer(target)
    raw = f"{target}.uncalibrated"
    node.output[:] = [raw if o == target else o for o in node.output]
    new = []
    if nodes_after:
        new.append(helper.make_node("Log", [raw], [f"{target}.log"], name="post.log"))
        new.append(helper.make_node("Div", [f"{target}.log", t_name], [f"{target}.scaled"], name="post.calibrate"))
        new.append(helper.make_node("Softmax", [f"{target}.scaled"], [target], name="post.softmax_calibrated", axis=-1))
    else:
        new.append(helper.make_node("Div", [raw, t_name], [target], name="post.calibrate"))
    for k, n in enumerate(new):
        graph.node.insert(i + 1 + k, n)


def calibrate_onnx(model_path: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike, *,
                   recall: float = DEFAULT_RECALL, score: str | None = None, labels: Any = None,
                   size: int | None = None, mean: Any = None, std: Any = None) -> OnnxCalibration:
    """Fit T on ``data_dir`` (class folders; its val/ when present) for an existing ONNX classifier, write ``out``.

    The new file's logits are divided by T (probabilities follow), its metadata is kept, with
    ``edgecnn.temperature`` (the total temperature applied) and ``edgecnn.ood`` (the unknown-input rule,
    picked on the same images for ``recall``) added. Written atomically, after a check that the new
    graph's probabilities are softmax(logits / T) and its top-1 answers unchanged.
    """
    import onnx

    from .data import DatasetError, EvalSet, class_samples
    from .export import graph as G
    from .fileio import atomic_path
    from .runtime import Classifier
    from .runtime.decode import looks_like_probabilities
    from .runtime.spec import META_OOD, META_TEMPERATURE, PROBABILITIES_OUTPUT

    clf = Classifier(model_path, device="cpu", labels=labels, size=size, mean=mean, std=std)
    root, samples = class_samples(data_dir, clf.labels)
    dataset = EvalSet(samples, clf.spec)
    if len(dataset) < 2:
        raise DatasetError(f"{root}: {len(dataset)} readable image(s); a temperature needs a validation set")
    images, targets = np.stack(list(dataset.images)), np.asarray(dataset.targets, dtype=np.int64)
    names = [o.name for o in clf.session.get_outputs()]
    logits_name = "logits" if "logits" in names else None
    probs_name = PROBABILITIES_OUTPUT if PROBABILITIES_OUTPUT in names else None
    if logits_name is None and probs_name is None:
        first = _graph_outputs(clf.session, clf, images[:8], names[0])
        if looks_like_probabilities(first):
            probs_name = names[0]
        else:
            logits_name = names[0]
    if logits_name is not None:
        logits, source = _graph_outputs(clf.session, clf, images, logits_name), "logits"
    else:
        assert probs_name is not None
        probs = _graph_outputs(clf.session, clf, images, probs_name)
        logits, source = np.log(np.clip(probs, 1e-12, None)), "log-probabilities"
    # For log-probabilities energy degenerates (logsumexp of log p is 0 at T = 1); max_prob works on either.
    score = score or (DEFAULT_OOD_SCORE if source == "logits" or DEFAULT_OOD_SCORE != "energy" else "max_prob")
    temperature = fit_temperature(logits, targets)
    result = summarize(logits, targets, temperature, recall=recall, score=score)

    proto = onnx.load(str(clf.path))
    meta = G.read_metadata(proto)
    previous = float(meta.get(META_TEMPERATURE, 1.0))
    _insert_temperature(proto, logits_name, probs_name, temperature)
    G.set_metadata(proto, {META_TEMPERATURE: repr(previous * temperature), META_OOD: json.dumps(result.ood, sort_keys=True)})
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = _graph_outputs(session, clf, images, logits_name or probs_name or "")
    expected = logits / temperature if logits_name else softmax(logits / temperature)
    if not np.allclose(got, expected, atol=1e-3, rtol=1e-3) or (got.argmax(1) != logits.argmax(1)).any():
        raise ValueError(f"the calibrated graph does not compute what was fitted (max difference "
                         f"{np.abs(got - expected).max():.2e}); nothing written to {out}")
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return OnnxCalibration(Path(out), source, previous, result)


# ------------------------------------------------------------------------------------------- the picture
def reliability_diagram(probs: np.ndarray, targets: np.ndarray, *, title: str, bins: int = ECE_BINS,
                        size: tuple[int, int] = (440, 440)) -> Image.Image:
    """Accuracy per confidence bin as bars against the diagonal (perfect calibration); gaps shaded red.

    Bars under the diagonal: overconfident in that bin; above it: underconfident. The bar's number is
    its image count, so sparse bins can be read for what they are.
    """
    from PIL import Image, ImageDraw

    from .plot import AXIS, GRID, HIGHLIGHT, MUTED, font, text_size

    mean_conf, accuracy, counts = reliability(probs, targets, bins)
    width, height = size
    left, right, top, bottom = 56, 16, 40, 48
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = width - left - right, height - top - bottom

    def px(x: float, y: float) -> tuple[float, float]:
        return left + x * w, top + (1 - y) * h

    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        draw.line([px(0, t), px(1, t)], fill=GRID)
        label = f"{t:.1f}"
        tw, th = text_size(draw, label, 12)
        draw.text((left - tw - 6, px(0, t)[1] - th / 2 - 2), label, fill=AXIS, font=font(12))
        draw.text((px(t, 0)[0] - tw / 2, top + h + 6), label, fill=AXIS, font=font(12))
    for b in range(bins):
        if counts[b] == 0:
            continue
        x0, x1 = b / bins, (b + 1) / bins
        draw.rectangle([px(x0, accuracy[b]), px(x1, 0)], fill=MUTED, outline="white")
        lo, hi = sorted((accuracy[b], mean_conf[b]))
        if hi - lo > 1e-3:
            draw.rectangle([px(x0 + 0.25 / bins, hi), px(x1 - 0.25 / bins, lo)], outline=HIGHLIGHT, width=2)
        text = str(int(counts[b]))
        tw, _ = text_size(draw, text, 10)
        if tw < w / bins + 6:
            draw.text((px((x0 + x1) / 2, 0)[0] - tw / 2, px(0, accuracy[b])[1] - 14), text, fill=AXIS, font=font(10))
    draw.line([px(0, 0), px(1, 1)], fill=AXIS, width=1)
    draw.rectangle([px(0, 1), px(1, 0)], outline=AXIS)
    xl = f"confidence (top-1 probability), {bins} bins"
    tw, _ = text_size(draw, xl, 13)
    draw.text(((width - tw) / 2, height - 24), xl, fill=AXIS, font=font(13))
    ylabel = Image.new("RGBA", (text_size(draw, "accuracy", 13)[0] + 4, 18), (255, 255, 255, 0))
    ImageDraw.Draw(ylabel).text((2, 0), "accuracy", fill=AXIS, font=font(13))
    rotated = ylabel.rotate(90, expand=True)
    image.paste(rotated, (4, top + (h - rotated.height) // 2), rotated)
    tw, _ = text_size(draw, title, 15)
    draw.text(((width - tw) / 2, 10), title, fill="black", font=font(15))
    return image


__all__ = [
    "DEFAULT_OOD_SCORE",
    "DEFAULT_RECALL",
    "ECE_BINS",
    "OOD_SCORES",
    "CalibrationResult",
    "auroc",
    "calibrate_after_training",
    "calibrate_onnx",
    "calibrate_run",
    "expected_calibration_error",
    "fit_temperature",
    "fold_temperature",
    "last_linear",
    "model_logits",
    "nll",
    "nll_from_probs",
    "reliability",
    "reliability_diagram",
    "summarize",
]
