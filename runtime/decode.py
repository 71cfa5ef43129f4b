"""Turning model outputs into answers: softmax, top-k and the confidence policy. Pure numpy.

    probs = softmax(logits)
    top = top_k(probs[0], labels, k=3)               # [Class(index, label, prob), ...]
    uncertain = is_uncertain(probs[0])               # min_confidence=0.5, min_margin=0.5 unless given
    verdict(probs[0])                                # "confident", "unsure" or "ambiguous"
    is_unknown(logits[0], OodRule("energy", -3.2, 0.95))  # none of the classes (the model's stored rule)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .policy import AMBIGUOUS_MARGIN, DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_MARGIN, VERDICTS

__all__ = ["AMBIGUOUS_MARGIN", "DEFAULT_MIN_CONFIDENCE", "DEFAULT_MIN_MARGIN", "VERDICTS", "Class", "is_uncertain",
           "looks_like_probabilities", "margin", "softmax", "top_k", "verdict"]


class Class(NamedTuple):
    # The field shadows tuple.index(); it is public API (Prediction.top[i].index, the JSON output), so it stays.
    index: int  # type: ignore[assignment]
    label: str
    prob: float


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def looks_like_probabilities(scores: np.ndarray, atol: float = 1e-3) -> bool:
    """True when every row is non-negative and sums to one: the model applied softmax itself."""
    return bool(np.all(scores >= -atol) and np.allclose(scores.sum(axis=-1), 1.0, atol=atol))


def top_k(probs: np.ndarray, labels: Sequence[str], k: int = 5) -> list[Class]:
    """The ``k`` most probable classes of one row, most probable first (ties: lower index first)."""
    k = max(1, min(k, probs.shape[-1]))
    order = np.argsort(-probs, kind="stable")[:k]
    return [Class(int(i), labels[i] if i < len(labels) else str(int(i)), float(probs[i])) for i in order]


def margin(probs: np.ndarray) -> float:
    """Softmax margin between the first and second classes: near 0 is a coin toss, near 1 a clear answer."""
    if probs.shape[-1] < 2:
        return float(probs.max())
    two = np.partition(probs, -2)[-2:]
    return float(two[1] - two[0])


# ------------------------------------------------------------------ the verdict: one definition of "uncertain"
# The bands the training report, `visualize`, the camera overlay, `classify` and the bundle all use; the
# thresholds live in policy.py (standard library only) and are re-exported here.


def verdict(probs: np.ndarray, *, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
            min_margin: float = DEFAULT_MIN_MARGIN, ambiguous_margin: float = AMBIGUOUS_MARGIN) -> str:
    """The verdict on one row of probabilities: "confident", "unsure" or "ambiguous".

    Confident: top probability >= ``min_confidence`` and margin >= ``min_margin`` (the caller's thresholds
    win). Otherwise ambiguous when the margin is below ``ambiguous_margin``, unsure when it is not.
    """
    m = margin(probs)
    if float(probs.max()) >= min_confidence and m >= min_margin:
        return "confident"
    return "ambiguous" if m < ambiguous_margin else "unsure"


def is_uncertain(probs: np.ndarray, *, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 min_margin: float = DEFAULT_MIN_MARGIN) -> bool:
    """True unless the verdict is "confident": the ``uncertain`` flag of every output."""
    return verdict(probs, min_confidence=min_confidence, min_margin=min_margin) != "confident"


# ------------------------------------------------------------------------- unknown inputs (out-of-distribution)
OOD_SCORES = ("energy", "max_logit", "max_prob")  # higher score = more likely none of the classes


class OodRule(NamedTuple):
    """When an input counts as unknown: ``ood_score(logits, score) > threshold``, picked for ``recall``.

    ``recall`` is the share of in-distribution validation images the threshold keeps (not rejected).
    Stored as JSON in the model's metadata (spec.META_OOD) and in the checkpoint.
    """

    score: str
    threshold: float
    recall: float

    def to_dict(self) -> dict[str, float | str]:
        return {"score": self.score, "threshold": float(self.threshold), "recall": float(self.recall)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OodRule:
        try:
            rule = cls(str(data["score"]), float(data["threshold"]), float(data["recall"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"an unknown-input rule needs score, threshold and recall, got {dict(data)!r} ({exc})") from None
        if rule.score not in OOD_SCORES:
            raise ValueError(f"unknown-input score {rule.score!r} is not one of {', '.join(OOD_SCORES)}")
        return rule


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def ood_score(logits: np.ndarray, score: str = "energy") -> np.ndarray:
    """Per row, how unlike the training classes an input looks; higher = more likely unknown.

    ``energy``: -logsumexp(logits) (Liu et al., 2020); ``max_logit``: -max(logits). Both are a reduction
    over the class axis, cheap on any board. ``max_prob``: -max(softmax(logits)) (Hendrycks & Gimpel, 2017),
    which survives label smoothing, which squeezes the logits' scale that the other two read. For a model
    that outputs only probabilities, pass log-probabilities.
    """
    z = np.asarray(logits, dtype=np.float64)
    if score == "energy":
        peak = np.max(z, axis=-1)
        return -(peak + np.log(np.sum(np.exp(z - peak[..., None]), axis=-1)))
    if score == "max_logit":
        return -np.max(z, axis=-1)
    if score == "max_prob":
        return -np.max(softmax(z), axis=-1)
    raise ValueError(f"unknown-input score {score!r} is not one of {', '.join(OOD_SCORES)}")


def pick_ood_threshold(in_scores: np.ndarray, recall: float = 0.95) -> float:
    """The smallest threshold that keeps at least ``recall`` of the in-distribution ``in_scores``."""
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    scores = np.sort(np.asarray(in_scores, dtype=np.float64).ravel())
    if not len(scores):
        raise ValueError("no in-distribution scores to pick a threshold from")
    keep = int(np.ceil(recall * len(scores) - 1e-9))  # images that must score <= threshold
    return float(scores[max(0, keep - 1)])


def is_unknown(logits: np.ndarray, rule: OodRule) -> np.ndarray | bool:
    """True where an input's OOD score is above the rule's threshold; one row gives a bool."""
    flags = ood_score(logits, rule.score) > rule.threshold
    return bool(flags) if np.ndim(flags) == 0 else flags
