"""Turning model outputs into answers: softmax, top-k and the confidence policy. Pure numpy.

    probs = softmax(logits)
    top = top_k(probs[0], labels, k=3)               # [Class(index, label, prob), ...]
    uncertain = is_uncertain(probs[0], min_confidence=0.5, min_margin=0.1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Class(NamedTuple):
    index: int
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


def is_uncertain(probs: np.ndarray, *, min_confidence: float = 0.0, min_margin: float = 0.0) -> bool:
    return float(probs.max()) < min_confidence or margin(probs) < min_margin
