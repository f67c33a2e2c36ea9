"""Counting what the graph model does not know: queries and snapshot facts with ids the store
gave after the artifact was trained (its vocabulary grows; the model's does not until it is
retrained).

Totals go to the stage's metrics endpoint (``geopol status`` shows them), and each step's share
of unknown queries is kept for the latest steps and logged as ``oov_step`` when a later step's
first query arrives, so a rising rate (the model going stale) shows up step by step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.log import get_logger

log = get_logger(__name__)
STAGE = "graph"


class OovCounter:
    """Per-step and total counts of unknown queries (by field) and of dropped snapshot facts."""

    def __init__(self, registry: CollectorRegistry | None = None, keep_steps: int = 64) -> None:
        self.keep_steps = keep_steps
        #: step -> [queries, unknown queries], the latest ``keep_steps`` steps
        self.steps: OrderedDict[int, list[int]] = OrderedDict()
        self.dropped_facts = 0
        self._metrics = registry is not None
        if registry is not None:
            self._queries = Counter(
                "geopol_graph_unknown_queries",
                "Queries answered with ABSTAIN: an id the graph artifact has no embedding for",
                ["stage"],
                registry=registry,
            )
            self._queries.labels(STAGE)  # exported as 0 from the start: status shows 0, not -
            self._fields = Counter(
                "geopol_graph_unknown_query_fields",
                "Unknown ids of those queries, by field (subject, relation)",
                ["stage", "field"],
                registry=registry,
            )
            self._facts = Counter(
                "geopol_graph_unknown_facts",
                "Snapshot facts left out of the history: an id the graph artifact never saw",
                ["stage"],
                registry=registry,
            )
            self._step = Gauge(
                "geopol_graph_oov_step", "Latest step with queries", ["stage"], registry=registry
            )
            self._step_queries = Gauge(
                "geopol_graph_oov_step_queries",
                "Queries of the latest step so far",
                ["stage"],
                registry=registry,
            )
            self._step_unknown = Gauge(
                "geopol_graph_oov_step_unknown",
                "Queries of the latest step unknown to the model so far",
                ["stage"],
                registry=registry,
            )

    def query(self, step: int, unknown: Sequence[str]) -> None:
        """One query of ``step``; ``unknown`` lists the fields the model lacks (empty: known)."""
        if step not in self.steps:
            self._close_latest(step)
            self.steps[step] = [0, 0]
            while len(self.steps) > self.keep_steps:
                self.steps.popitem(last=False)
        counts = self.steps[step]
        counts[0] += 1
        counts[1] += bool(unknown)
        if self._metrics and unknown:
            self._queries.labels(STAGE).inc()
            for field in unknown:
                self._fields.labels(STAGE, field).inc()
        if self._metrics and step == max(self.steps):
            self._step.labels(STAGE).set(step)
            self._step_queries.labels(STAGE).set(counts[0])
            self._step_unknown.labels(STAGE).set(counts[1])

    def facts(self, triples: np.ndarray, num_entities: int, num_relations: int) -> int:
        """Count the snapshot facts the history must leave out; returns how many."""
        triples = np.asarray(triples).reshape(-1, 3)
        unknown = (
            (triples[:, 0] >= num_entities)
            | (triples[:, 2] >= num_entities)
            | (triples[:, 1] >= num_relations)
        )
        dropped = int(unknown.sum())
        self.dropped_facts += dropped
        if self._metrics and dropped:
            self._facts.labels(STAGE).inc(dropped)
        return dropped

    def _close_latest(self, new_step: int) -> None:
        """Log the step before ``new_step``'s first query, once it has a successor."""
        if self.steps:
            latest = max(self.steps)
            if new_step > latest:
                queries, unknown = self.steps[latest]
                log.info("oov_step", step=latest, queries=queries, unknown=unknown)
