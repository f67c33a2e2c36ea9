"""Pure rules of the ingest stage."""

from __future__ import annotations

import numpy as np

from services.ingest.work import steps_to_close
from shared.ids import frame_to_ids
from shared.protocol import MessageType, decode, encode
from shared.work_messages import next_queries, query_message, snapshot_message


def test_steps_close_when_a_later_step_exists_or_at_once_per_file():
    assert steps_to_close([3, 1, 2], set(), close_latest=False) == [1, 2]
    assert steps_to_close([1, 2, 3], {1}, close_latest=True) == [2, 3]
    assert steps_to_close([], set(), close_latest=True) == []


def test_queries_are_the_active_pairs_most_frequent_first():
    triples = np.array([[1, 2, 3], [4, 0, 1], [1, 2, 5], [4, 0, 2], [4, 0, 9], [7, 1, 1]])
    got = next_queries("SIM", 10, triples, limit=2)
    assert [i.id for i in got] == ["SIM/t11/s4/r0", "SIM/t11/s1/r2"]
    assert got[0].meta == {"dataset": "SIM", "step": 11, "subject": 4, "relation": 0}
    assert next_queries("SIM", 10, np.empty((0, 3), np.int64), 5) == []


def test_snapshot_and_query_messages_survive_the_wire():
    triples = np.array([[0, 1, 2], [16_000_000, 3, 4]])
    snap = decode(encode(snapshot_message("SIM", 9, triples, 10, 4)))
    assert snap.type == MessageType.SNAPSHOT and snap.meta["step"] == 9
    np.testing.assert_array_equal(frame_to_ids(snap.frames[0]), triples)
    (item,) = next_queries("SIM", 9, triples[:1], 1)
    query = decode(encode(query_message(item)))
    assert query.id == "SIM/t10/s0/r1" and query.meta["attempt"] == 1 and query.frames == ()
