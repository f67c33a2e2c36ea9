"""The graph stage's EMBEDDINGS reply carries only the query fields it needs, each bounded, so
no query header can make a reply too large to send (issue 9, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.graph.history import RecentWindow
from services.graph.service import GraphStage
from shared.graph_frames import META_FIELDS
from shared.ids import query_id
from shared.protocol import MessageType, decode, encode, new_message
from shared.protocol.codec import DEFAULT_LIMITS
from shared.work_messages import snapshot_message

T, K = 3, 4
REPLY_KEYS = set(META_FIELDS)


@pytest.fixture
def stage(tmp_path: Path, graph_model, tiny) -> GraphStage:
    store = tiny.open_store(tmp_path / "store")
    tiny.append_steps(store, range(6))
    window = RecentWindow(tiny.num_entities, tiny.num_relations, tiny.cfg.history, T)
    graph = GraphStage(graph_model, window, store, K)
    for t in range(6):
        triples = tiny.triples_at(t)
        snapshot = snapshot_message("TINY", t, triples, tiny.num_entities, tiny.num_relations)
        graph.handle("queries", snapshot)
    return graph


def _query(**extra: object):
    meta = {"dataset": "TINY", "step": 6, "subject": 3, "relation": 1, "attempt": 2, **extra}
    return new_message(MessageType.QUERY, query_id("TINY", 6, 3, 1), [], meta=meta)


def test_a_query_header_near_the_limit_gets_a_small_sendable_reply(stage):
    pad = DEFAULT_LIMITS.max_header_bytes - 300
    asked = _query(pad="x" * pad, names={"subject": "forged"}, candidates=[0] * 50)
    header = encode(asked)[0]
    assert DEFAULT_LIMITS.max_header_bytes - 300 < len(header) <= DEFAULT_LIMITS.max_header_bytes
    [(_, reply)] = stage.handle("queries", decode([header]))
    assert set(reply.meta) == REPLY_KEYS
    assert {k: reply.meta[k] for k in ("dataset", "step", "subject", "relation", "attempt")} == {
        "dataset": "TINY",
        "step": 6,
        "subject": 3,
        "relation": 1,
        "attempt": 2,
    }
    assert len(reply.meta["candidates"]) == K  # the graph's own, not the query's
    assert len(encode(reply)[0]) < 1024


@pytest.mark.parametrize(
    ("field", "value"), [("dataset", "D" * 129), ("dataset", None), ("attempt", "2")]
)
def test_a_query_field_the_reply_would_carry_unchecked_is_refused_by_name(stage, field, value):
    with pytest.raises(ValueError, match=f"meta field '{field}'"):
        stage.handle("queries", _query(**{field: value}))
