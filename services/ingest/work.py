"""Pure functions of the ingest stage: which steps close, what a snapshot and a query look like.

Kept apart from the service loop so the rules can be tested without sockets, files or clocks.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from shared.ids import ids_to_frame, query_id
from shared.journal import WorkItem
from shared.protocol import Message, MessageType, new_message


def steps_to_close(steps: Iterable[int], closed: set[int], close_latest: bool) -> list[int]:
    """Steps whose snapshot is final and not yet emitted, oldest first.

    A step is final once a later step has data, or at once when each source file is exactly one
    step (GDELT 2.0 with 15-minute steps), which ``close_latest`` says.
    """
    ordered = sorted(set(steps))
    final = ordered if close_latest else ordered[:-1]
    return [t for t in final if t not in closed]


def snapshot_message(
    dataset: str, step: int, triples: np.ndarray, num_entities: int, num_relations: int
) -> Message:
    """The closed step's facts as an [n, 3] frame of (subject, relation, object) ids."""
    return new_message(
        MessageType.SNAPSHOT,
        f"{dataset}/snapshot/t{step}",
        [ids_to_frame(triples.reshape(-1, 3))],
        meta={
            "dataset": dataset,
            "step": step,
            "num_entities": num_entities,
            "num_relations": num_relations,
        },
    )


def next_queries(dataset: str, step: int, triples: np.ndarray, limit: int) -> list[WorkItem]:
    """Queries (s, r, ?, step + 1) for the (s, r) pairs active at ``step``, most frequent first.

    Recent activity is the strongest single predictor of what will be reported next (the
    recurrency baseline's finding), so it decides which questions are worth asking.
    """
    if triples.size == 0:
        return []
    pairs, counts = np.unique(triples[:, :2], axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:limit]
    target = step + 1
    return [
        WorkItem(
            id=query_id(dataset, target, int(s), int(r)),
            step=target,
            meta={"dataset": dataset, "step": target, "subject": int(s), "relation": int(r)},
        )
        for s, r in pairs[order]
    ]


def query_message(item: WorkItem, trace_id: str | None = None) -> Message:
    """A journaled work item as the QUERY message sent to the graph stage."""
    return new_message(
        MessageType.QUERY,
        item.id,
        [],
        trace_id=trace_id,
        meta={**item.meta, "attempt": item.attempts + 1},
    )
