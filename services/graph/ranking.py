"""Rank-based metrics for the ``ranking`` protocol: MRR and Hits@1/3/10, raw and time-aware.

Every entity is a candidate. For each query the scorer gives a row of scores; what matters for
the gold object is how many candidates score strictly above it (``above``) and how many score
exactly the same (``tied``, the gold itself not counted). The time-aware filter removes the other
true objects of the same ``(s, r, t)`` from those two counts.

Ties. The reference implementations of "Comparing Apples and Oranges?" (Gastinger et al. 2023,
nec-research/TKG-Forecasting-Evaluation) and of the recurrency baseline (Gastinger et al. 2024,
nec-research/recurrency_baseline_tkg) break ties *at random*: they add uniform noise far below
the score resolution before sorting. We report the exact expectation of that procedure instead
of one random draw, so numbers are reproducible and free of sampling noise: with the gold object
at a uniformly random place among its ``tied + 1`` equals, its rank is uniform on
``above + 1 .. above + tied + 1``, hence

    E[1 / rank]      = (H(above + tied + 1) - H(above)) / (tied + 1)       (H: harmonic numbers)
    P(rank <= k)     = clip((k - above) / (tied + 1), 0, 1)

This is not the "mean rank" convention ``1 / (above + 1 + tied / 2)``, which overstates MRR
under ties; for a scorer without ties both reduce to ``1 / (above + 1)``. Baselines that score
most entities 0 (never seen) rely on this: the gold object in the zero block gets the expected
reciprocal rank of a random guess among the unseen entities, as in the reference code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

HITS_AT = (1, 3, 10)


@dataclass(frozen=True)
class RankCounts:
    """Per query: candidates scored strictly above the gold object, and candidates tied with it."""

    above: np.ndarray
    tied: np.ndarray

    def __len__(self) -> int:
        return len(self.above)

    @staticmethod
    def concat(parts: list[RankCounts]) -> RankCounts:
        """Join the counts of several batches (time steps) in order."""
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return RankCounts(empty, empty)
        return RankCounts(
            np.concatenate([p.above for p in parts]), np.concatenate([p.tied for p in parts])
        )


def count_ranks(
    scores: np.ndarray, gold: np.ndarray, filter_rows: np.ndarray, filter_cols: np.ndarray
) -> tuple[RankCounts, RankCounts]:
    """Raw and time-aware filtered counts for a batch of queries.

    ``scores`` is ``[n_queries, num_entities]``; ``(filter_rows, filter_cols)`` lists the other
    true objects of each query (see ``queries.StepQueries``), removed for the filtered counts.
    The filter is applied by subtracting what those few candidates contributed, so the dense
    matrix is compared only once and never copied.
    """
    if scores.ndim != 2 or scores.shape[0] != len(gold):
        raise ValueError(
            f"scores must be [n_queries={len(gold)}, num_entities], got {scores.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: the rank of the gold object is undefined")
    rows = np.arange(len(gold))
    gold_score = scores[rows, gold][:, None]
    raw = RankCounts((scores > gold_score).sum(axis=1), (scores == gold_score).sum(axis=1) - 1)
    removed = scores[filter_rows, filter_cols]
    reference = gold_score[filter_rows, 0]
    n = len(gold)
    filtered = RankCounts(
        raw.above - np.bincount(filter_rows, removed > reference, minlength=n).astype(np.int64),
        raw.tied - np.bincount(filter_rows, removed == reference, minlength=n).astype(np.int64),
    )
    return raw, filtered


def reciprocal_rank(counts: RankCounts) -> np.ndarray:
    """Expected 1/rank of each query under uniformly random tie breaking (see module doc)."""
    largest = int((counts.above + counts.tied).max(initial=0)) + 1
    harmonic = _harmonic_numbers(1 << largest.bit_length())
    total = harmonic[counts.above + counts.tied + 1] - harmonic[counts.above]
    return total / (counts.tied + 1)


def hits(counts: RankCounts, k: int) -> np.ndarray:
    """Probability that each query's rank is at most ``k`` under random tie breaking."""
    return np.clip((k - counts.above) / (counts.tied + 1), 0.0, 1.0)


def summarise(counts: RankCounts) -> dict[str, float | int]:
    """MRR, Hits@1/3/10 (fractions in [0, 1]) and the number of queries."""
    if len(counts) == 0:
        raise ValueError("no queries to summarise")
    metrics: dict[str, float | int] = {"mrr": float(reciprocal_rank(counts).mean())}
    for k in HITS_AT:
        metrics[f"hits@{k}"] = float(hits(counts, k).mean())
    metrics["n_queries"] = len(counts)
    return metrics


@lru_cache(maxsize=8)
def _harmonic_numbers(n: int) -> np.ndarray:
    """``H[0..n]`` with ``H[0] = 0``; cached (callers round ``n`` up to a power of two)."""
    table = np.zeros(n + 1)
    table[1:] = np.cumsum(1.0 / np.arange(1, n + 1))
    table.setflags(write=False)
    return table
