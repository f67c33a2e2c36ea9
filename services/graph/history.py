"""The recent history the graph stage encodes: the last snapshots before the next query step.

RE-GCN predicts step ``t`` from the ``k`` snapshots before it. TGL-LLM also hands the LLM the
entity embeddings after each of the last ``T`` steps, and each of those is itself an encoding of
the ``k`` snapshots ending at that step, so the window keeps the last ``k + T - 1`` non-empty
snapshots (at least :data:`MCQ_LOOKBACK`, the steps the tgl-mcq negatives are drawn from).

The window also knows its ``horizon``: every step up to it has been seen (as a snapshot message or
read from the event store), so a query for ``horizon + 1`` can be answered from the window alone.
When a snapshot message was missed, or on start when the window is empty, it rebuilds itself from
the store. Both ways give the same facts because the store refuses late rows for a closed step
(see "Closed steps" in shared/event_store.py): a step's rows are fixed before its snapshot is
sent, so what the horizon covers never changes afterwards.

Snapshots are kept unpadded (a few arrays of edge ids); :meth:`RecentWindow.histories` pads them
to one bucket when the embeddings are computed, which happens once per window state.

Facts naming an entity or relation the model was not trained on (the live vocabulary grows) are
dropped: the model has no embedding for them.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import jax
import numpy as np
import structlog

from services.graph.snapshots import (
    History,
    SnapshotArrays,
    default_buckets,
    make_history,
    snapshot_arrays,
)

if TYPE_CHECKING:
    from shared.event_store import EventStore

log = structlog.get_logger(__name__)

#: tgl-mcq draws negatives from the entities seen in the three steps before the query.
MCQ_LOOKBACK = 3


class RecentWindow:
    """The last snapshots (oldest first) and the step up to which nothing is missing."""

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        history: int,
        steps: int,
        min_bucket: int = 64,
    ) -> None:
        if history < 1 or steps < 1:
            raise ValueError(f"history and steps must be >= 1, got {history} and {steps}")
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.history = history
        self.steps = steps
        self.min_bucket = min_bucket
        self.capacity = max(history + steps - 1, MCQ_LOOKBACK)
        self._snaps: deque[SnapshotArrays] = deque(maxlen=self.capacity)
        self.horizon: int | None = None
        #: Bumped on every change, so a cache of embeddings knows when it is stale.
        self.version = 0

    def fresh(self) -> RecentWindow:
        """An empty window of the same shape (to answer a query the window has moved past)."""
        return RecentWindow(
            self.num_entities, self.num_relations, self.history, self.steps, self.min_bucket
        )

    @property
    def snapshot_steps(self) -> list[int]:
        """Steps of the snapshots held, oldest first."""
        return [snap.t for snap in self._snaps]

    @property
    def last_step(self) -> int | None:
        """The newest step with facts in the window, or None when it holds none."""
        return self._snaps[-1].t if self._snaps else None

    def advance(self, step: int, triples: np.ndarray) -> None:
        """Add the facts of ``step``, which must lie past the horizon; an empty step only moves it.

        The caller guarantees no step between the horizon and ``step`` is missing (the service
        checks the store; the export walks every step).
        """
        if self.horizon is not None and step <= self.horizon:
            raise ValueError(f"step {step} is not past the window's horizon {self.horizon}")
        snap = self._arrays(step, triples)
        if snap is not None:
            self._snaps.append(snap)
        self.horizon = step
        self.version += 1

    def rebuild(self, store: EventStore, before: int) -> None:
        """Refill from the store with the last snapshots of steps ``< before``.

        Afterwards the horizon is ``before - 1``: the store is the record of what happened, so
        whatever it lacks there did not happen (yet).
        """
        snaps: list[SnapshotArrays] = []
        for step in reversed([t for t in store.steps() if t < before]):
            snap = self._arrays(step, store.snapshot(step))
            if snap is not None:
                snaps.append(snap)
            if len(snaps) == self.capacity:
                break
        self._snaps = deque(reversed(snaps), maxlen=self.capacity)
        self.horizon = before - 1
        self.version += 1
        log.info("window_rebuilt", before=before, steps=self.snapshot_steps)

    def seen_entities(self, first: int, last: int) -> np.ndarray:
        """Sorted ids of the entities (subjects or objects) in steps ``first..last`` inclusive."""
        parts = [snap.senders for snap in self._snaps if first <= snap.t <= last]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int32)

    def histories(self) -> History:
        """The ``T`` histories whose encodings are the T-step embeddings, stacked on axis 0.

        Slot ``j`` holds the ``k`` snapshots ending ``T - 1 - j`` snapshots before the newest
        (empty slots where the data is shorter: the model then returns its initial entities).
        All slots share one padded size so the encoder compiles once per bucket.
        """
        snaps = list(self._snaps)
        largest = max((snap.num_edges for snap in snaps), default=1)
        size = default_buckets(largest, self.min_bucket)[-1]
        slots = [
            make_history(
                snaps[: max(0, len(snaps) - offset)],
                self.history,
                size,
                self.num_entities,
                self.num_relations,
            )
            for offset in range(self.steps - 1, -1, -1)
        ]
        return jax.tree.map(lambda *leaves: np.stack(leaves), *slots)

    def _arrays(self, step: int, triples: np.ndarray) -> SnapshotArrays | None:
        """Edge arrays of one step's known facts, or None when none is left."""
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        known = (
            (triples[:, [0, 2]] < self.num_entities).all(axis=1)
            & (triples[:, 1] < self.num_relations)
            & (triples >= 0).all(axis=1)
        )
        if not known.all():
            log.warning("unknown_ids_dropped", step=step, dropped=int((~known).sum()))
        triples = triples[known]
        if len(triples) == 0:
            return None
        facts = np.column_stack([triples, np.full(len(triples), step, dtype=np.int64)])
        return snapshot_arrays(facts, self.num_relations)
