"""Scores of probabilistic forecasts: ECE, multi-class Brier, NLL, accuracy, reliability bins.

Shared by the calibrate stage (fitting, resolution, its scorecard) and the evaluations, so a
number in reports/eval.json and one on the live scorecard mean the same thing.

A forecast is a row of probabilities over its options; the truth is an option index. In live
use the last option may be ``other`` (none of the K candidates): a retrieval miss then has the
truth ``K``, so misses count against every metric instead of being dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECE_BINS = 15
_FLOOR = 1e-12  # a probability of exactly 0 for the truth would make the log score infinite


@dataclass(frozen=True)
class Reliability:
    """Top-1 confidence against accuracy in equal-width bins (empty bins have count 0)."""

    edges: np.ndarray  # [bins + 1]
    confidence: np.ndarray  # [bins] mean top-1 probability in the bin
    accuracy: np.ndarray  # [bins] share of top-1 picks that were right
    count: np.ndarray  # [bins]


def _checked(probs: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    if probs.ndim != 2 or truth.shape != (len(probs),):
        raise ValueError(f"probabilities {probs.shape} and truths {truth.shape} do not pair up")
    if len(truth) and (truth.min() < 0 or truth.max() >= probs.shape[1]):
        raise ValueError(f"truth outside the {probs.shape[1]} options")
    return probs, truth


def reliability(probs: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    probs, truth = _checked(probs, truth)
    top = probs.max(axis=1)
    right = (probs.argmax(axis=1) == truth).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    safe = np.maximum(count, 1)
    return Reliability(
        edges=edges,
        confidence=np.bincount(which, weights=top, minlength=bins) / safe,
        accuracy=np.bincount(which, weights=right, minlength=bins) / safe,
        count=count,
    )


def ece(probs: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 pick: the count-weighted mean |acc - conf|."""
    table = reliability(probs, truth, bins)
    total = table.count.sum()
    if total == 0:
        return 0.0
    return float((table.count * np.abs(table.accuracy - table.confidence)).sum() / total)


def ece_floor(
    probs: np.ndarray, bins: int = ECE_BINS, draws: int = 200, seed: int = 0
) -> tuple[float, float]:
    """The ECE a perfectly calibrated forecaster with these top-1 confidences would still show
    on this many questions, from sampling alone: (mean, 95th percentile) over ``draws`` outcome
    sets where each top pick is right with exactly its stated probability.

    ECE is biased upwards on a finite sample (every bin's |acc - conf| is at least its noise), so
    a measured ECE is only evidence of miscalibration by how much it exceeds this floor."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or not len(probs):
        raise ValueError(f"probabilities {probs.shape}: need [n, K] with n >= 1")
    top = probs.max(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    confidence = np.bincount(which, weights=top, minlength=bins) / np.maximum(count, 1)
    right = np.random.default_rng(seed).random((draws, len(top))) < top
    hits = np.stack([np.bincount(which, weights=r, minlength=bins) for r in right])
    gaps = np.abs(hits / np.maximum(count, 1) - confidence) * count
    values = gaps.sum(axis=1) / len(top)
    return float(values.mean()), float(np.percentile(values, 95))


def brier(probs: np.ndarray, truth: np.ndarray) -> float:
    """Multi-class Brier score: the mean over forecasts of sum_k (p_k - [k == truth])^2."""
    probs, truth = _checked(probs, truth)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(truth)), truth] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean()) if len(truth) else 0.0


def nll(probs: np.ndarray, truth: np.ndarray) -> float:
    """Mean negative log probability of the truth (the log score, lower is better)."""
    probs, truth = _checked(probs, truth)
    if not len(truth):
        return 0.0
    return float(-np.log(np.maximum(probs[np.arange(len(truth)), truth], _FLOOR)).mean())


def accuracy(probs: np.ndarray, truth: np.ndarray) -> float:
    probs, truth = _checked(probs, truth)
    return float((probs.argmax(axis=1) == truth).mean()) if len(truth) else 0.0


def summary(probs: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """All four, as reports/eval.json names them."""
    return {
        "ece": ece(probs, truth),
        "brier": brier(probs, truth),
        "nll": nll(probs, truth),
        "acc": accuracy(probs, truth),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
