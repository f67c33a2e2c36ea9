"""Ranking queries per time step, with inverse relations and time-aware filter sets.

The ranking protocol (DESIGN.md, "Evaluation protocols") asks, for each fact ``(s, r, o, t)``, an
object query ``(s, r, ?, t)`` and a subject query written as the object query of the inverse
relation, ``(o, r + R, ?, t)`` with ``R = num_relations``. Treating both directions as object
queries lets one scorer and one ranking routine serve both, as RE-GCN and the recurrency baseline
do. The time-aware filter of a query is the set of *other* true objects of the same
``(s, r, t)``: they are removed from its ranking, nothing from other time steps is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StepQueries:
    """All object queries of one time step (inverse ones included), in one batch.

    ``filter_rows[i]`` is a query index and ``filter_cols[i]`` another true object of that
    query's ``(s, r, t)``: the pairs the time-aware filter removes. The gold object itself is
    never among them.
    """

    t: int
    subject: np.ndarray
    relation: np.ndarray
    gold: np.ndarray
    filter_rows: np.ndarray
    filter_cols: np.ndarray

    def __len__(self) -> int:
        return len(self.gold)


def with_inverse(facts: np.ndarray, num_relations: int) -> np.ndarray:
    """``(n, 4)`` facts -> ``(2n, 4)``: the facts, then ``(o, r + R, s, t)`` for each of them."""
    facts = np.asarray(facts, dtype=np.int64).reshape(-1, 4)
    inverse = facts[:, [2, 1, 0, 3]].copy()
    inverse[:, 1] += num_relations
    return np.concatenate([facts, inverse])


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten the index ranges ``[lo[i], hi[i])``: returns (owner ``i``, index) per element.

    This is the vectorised form of ``for i: for j in range(lo[i], hi[i])`` used to gather the
    contiguous slices a sorted array holds for each query.
    """
    lengths = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(lo)), lengths)
    starts = np.cumsum(lengths) - lengths
    index = np.arange(int(lengths.sum())) - np.repeat(starts, lengths) + np.repeat(lo, lengths)
    return owner, index


def step_queries(quads: np.ndarray, num_relations_total: int) -> StepQueries:
    """Queries of one time step from its quadruples (inverse ones already added).

    ``num_relations_total`` is ``2R``; it only serves to pack ``(s, r)`` into one sort key.
    """
    times = np.unique(quads[:, 3])
    if len(times) != 1:
        raise ValueError(f"step_queries needs the facts of one time step, got times {times[:5]}")
    subject, relation, gold = quads[:, 0], quads[:, 1], quads[:, 2]
    rows, cols = _other_true_objects(subject * num_relations_total + relation, gold)
    return StepQueries(int(times[0]), subject, relation, gold, rows, cols)


def iter_step_queries(facts: np.ndarray, num_relations: int) -> Iterator[StepQueries]:
    """Queries of each time step of ``facts`` (without inverses), in increasing time order."""
    quads = with_inverse(facts, num_relations)
    quads = quads[np.argsort(quads[:, 3], kind="stable")]
    bounds = np.flatnonzero(np.diff(quads[:, 3])) + 1
    for chunk in np.split(quads, bounds):
        if len(chunk):
            yield step_queries(chunk, 2 * num_relations)


def _other_true_objects(keys: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, object) pairs: every true object of the query's key except its own gold."""
    pairs = np.unique(np.stack([keys, gold], axis=1), axis=0)
    lo = np.searchsorted(pairs[:, 0], keys, side="left")
    hi = np.searchsorted(pairs[:, 0], keys, side="right")
    rows, index = expand_ranges(lo, hi)
    cols = pairs[index, 1]
    keep = cols != gold[rows]
    return rows[keep], cols[keep]
