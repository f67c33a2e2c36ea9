"""An ABSTAIN message: the graph model has no embedding for a query's subject or relation.

A live store keeps growing its vocabulary after the graph artifact was trained (new actors
appear every day; the store never reuses an id), so some queries name an entity or relation the
model has never seen. Ranking candidates for them would be invented, and dead-lettering them
would leave ingest re-sending them until they fail out. Instead the graph stage answers with
ABSTAIN (no frames), the llm stage passes it on, and the calibrate stage publishes a forecast
that says the model does not know the subject and ranks nothing; its ``done`` closes the work
item like any other. The three stages agree on this meta, so it lives here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.protocol import Message, MessageType, new_message

#: The query fields a model can lack an embedding for, in the order they are listed.
UNKNOWN_FIELDS = ("subject", "relation")
#: Lineage and display fields a stage may add as the abstention travels on.
CARRIED_FIELDS = ("dataset", "attempt", "graph_artifact", "data_cutoff", "llm_artifact", "calendar")


class AbstentionError(ValueError):
    """An ABSTAIN message whose meta is not what the stages agreed on; names the field."""


@dataclass(frozen=True)
class Abstention:
    """One checked ABSTAIN message."""

    id: str
    step: int
    subject: int
    relation: int
    unknown: tuple[str, ...]
    meta: Mapping[str, Any]


def abstain(
    query: Message, fields: Mapping[str, Any], unknown: Sequence[str], **lineage: Any
) -> Message:
    """The ABSTAIN reply to ``query``: its checked query ``fields`` (step, subject, relation and
    the rest the reply carries), which of them the model lacks, and the lineage so far."""
    meta = {**fields, "unknown": list(unknown), **lineage}
    checked = _check(query.id, meta)
    return new_message(
        MessageType.ABSTAIN, query.id, [], trace_id=query.trace_id, meta=dict(checked.meta)
    )


def pass_on(message: Message, **lineage: Any) -> Message:
    """The same abstention sent one stage further, with this stage's lineage added."""
    checked = read_abstention(message)
    return new_message(
        MessageType.ABSTAIN,
        message.id,
        [],
        trace_id=message.trace_id,
        meta={**checked.meta, **lineage},
    )


def read_abstention(message: Message) -> Abstention:
    """Check an ABSTAIN message; raise :class:`AbstentionError` naming the field at fault."""
    if message.type is not MessageType.ABSTAIN:
        raise AbstentionError(f"expected an abstain message, got {message.type}")
    if message.frames:
        raise AbstentionError(f"an abstain message carries no frames, got {len(message.frames)}")
    return _check(message.id, message.meta)


def _check(message_id: str, meta: Mapping[str, Any]) -> Abstention:
    for key in ("step", "subject", "relation"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise AbstentionError(f"meta {key!r} must be an integer, got {value!r:.80}")
    unknown = meta.get("unknown")
    if (
        not isinstance(unknown, list)
        or not unknown
        or any(field not in UNKNOWN_FIELDS for field in unknown)
        or len(set(unknown)) != len(unknown)
    ):
        raise AbstentionError(
            f"meta 'unknown' must list some of {list(UNKNOWN_FIELDS)} once each, "
            f"got {unknown!r:.80}"
        )
    kept = {key: meta[key] for key in ("step", "subject", "relation", "unknown")}
    kept |= {key: meta[key] for key in CARRIED_FIELDS if key in meta}
    return Abstention(
        id=message_id,
        step=int(meta["step"]),
        subject=int(meta["subject"]),
        relation=int(meta["relation"]),
        unknown=tuple(unknown),
        meta=kept,
    )
