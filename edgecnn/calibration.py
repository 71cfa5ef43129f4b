"""The calibration measures: the temperature fit (Guo et al., 2017), ECE, NLL, reliability bins, AUROC, the OOD rule.

    t = fit_temperature(val_logits, val_targets)          # one T > 0 minimizing the validation NLL
    expected_calibration_error(softmax(logits / t), targets)  # ECE over ECE_BINS equal-width bins

Dividing the logits by T never changes the argmax, so accuracy is untouched. Label smoothing makes
models underconfident, so T < 1 (sharper probabilities) is the usual result. Numpy only: T is applied
by calibration_run (folded into a trained model's last nn.Linear, best.pt) and calibration_onnx (an
existing ONNX file); calibration_plot draws the reliability diagram.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .runtime.decode import OOD_SCORES, OodRule, log_softmax, ood_score, pick_ood_threshold, softmax

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


__all__ = [
    "DEFAULT_OOD_SCORE",
    "DEFAULT_RECALL",
    "ECE_BINS",
    "OOD_SCORES",
    "T_RANGE",
    "CalibrationResult",
    "auroc",
    "expected_calibration_error",
    "fit_temperature",
    "nll",
    "nll_from_probs",
    "reliability",
    "summarize",
]
