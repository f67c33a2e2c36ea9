"""The recurrency baseline in live use: its scores of a query's K candidates, from the store.

The calibrate stage stacks three scores per candidate — the LLM's, the graph's and the recurrency
baseline's — and is fitted on embedding exports, whose recurrency column is the tuned baseline
scoring from every fact before the query's step. Serving must send the same feature, so this
scores exactly that way: parameters tuned on the dataset's valid split as the export tunes them
(``services.graph.export``), history = every stored fact before step ``t`` with inverses. The
history is built once per step and kept while queries of that step arrive; building it reads the
store's facts before ``t`` (linear in the history, seconds at ICEWS scale).
"""

from __future__ import annotations

import numpy as np

from services.graph.baselines import (
    LAMBDAS,
    History,
    RecurrencyParams,
    StepScores,
    recurrency_scores,
)
from services.graph.queries import StepQueries, with_inverse
from shared.event_store import EventStore


class StoreRecurrency:
    """Tuned recurrency scores of candidates for ``(subject, relation, ?, t)`` over a store."""

    def __init__(
        self,
        store: EventStore,
        params: RecurrencyParams,
        num_entities: int,
        num_relations: int,
    ) -> None:
        self.store = store
        self.params = params
        self.num_entities = num_entities
        self.num_relations = num_relations
        self._step: int | None = None
        self._history: History | None = None

    def _history_before(self, t: int) -> History | None:
        if self._step != t:
            frame = self.store.scan(t_max=t - 1).select("subject", "relation", "object", "t")
            facts = frame.to_numpy().astype(np.int64).reshape(-1, 4)
            known = (
                (facts[:, 0] < self.num_entities)
                & (facts[:, 2] < self.num_entities)
                & (facts[:, 1] < self.num_relations)
            )  # ids the graph artifact has never seen cannot be candidates
            if not known.any():
                self._step, self._history = t, None  # nothing happened before t yet
                return None
            history = History(
                with_inverse(facts[known], self.num_relations),
                self.num_entities,
                self.num_relations,
                LAMBDAS,
            )
            history.advance_to(t)
            self._step, self._history = t, history
        return self._history

    def scores(self, t: int, subject: int, relation: int, candidates: np.ndarray) -> np.ndarray:
        """``[K]`` float32: the recurrency score of each candidate (0 for never-seen pairs)."""
        history = self._history_before(t)
        if history is None:
            return np.zeros(len(candidates), dtype=np.float32)
        none = np.zeros(0, dtype=np.int64)
        query = StepQueries(
            t, np.array([subject]), np.array([relation]), np.array([-1]), none, none
        )
        dense = recurrency_scores(StepScores(history, query), self.params)
        return dense[0, np.asarray(candidates, dtype=np.int64)].astype(np.float32)
