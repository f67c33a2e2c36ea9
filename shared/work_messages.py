"""What ingest sends the graph stage: a closed step's snapshot, and the queries for the next step.

Both stages agree on these messages, and the graph's catch-up benchmark replays the very queries
ingest would send, so they live here rather than in either stage's folder.
"""

from __future__ import annotations

import numpy as np

from shared.ids import ids_to_frame, query_id
from shared.journal import WorkItem
from shared.protocol import Message, MessageType, new_message


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
