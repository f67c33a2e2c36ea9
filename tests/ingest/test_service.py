"""The ingest stage without sockets: files in, snapshots and journaled queries out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.ingest.service import IngestStage
from services.ingest.simulator import WorldParams, simulate
from shared.config import Config
from shared.protocol import MessageType, new_message


def _config(tmp_path, source) -> Config:
    return Config(
        name="t",
        paths={"run_dir": tmp_path / "run"},
        ingest={
            "dataset": "SIM",
            "source": source,
            "min_free_mb": 0,
            "queries_per_step": 5,
            "resend_timeout_s": 30.0,
            "window": 8,
            "mapping": {"time_field": "dateadded", "step_minutes": 15},
        },
        stages={"ingest": {}},
    )


@pytest.fixture()
def sim(tmp_path):
    out = tmp_path / "sim"
    simulate(
        out,
        WorldParams(seed=1, events_per_step=30),
        steps=3,
        start=datetime(2024, 1, 1, tzinfo=UTC),
    )
    return out


def test_tick_closes_each_step_and_sends_queries_within_the_window(tmp_path, sim):
    stage = IngestStage(_config(tmp_path, sim))
    routes = stage.tick(now=1000.0)
    kinds = [m.type for _, m in routes]
    assert kinds.count(MessageType.SNAPSHOT) == 3
    queries = [m for _, m in routes if m.type == MessageType.QUERY]
    assert len(queries) == 8  # window
    assert stage.journal.counts() == {"pending": 15, "done": 0}
    steps = sorted(m.meta["step"] for _, m in routes if m.type == MessageType.SNAPSHOT)
    assert {q.meta["step"] for q in queries} <= {s + 1 for s in steps}
    assert stage.tick(now=1001.0) == []  # nothing new, window full, nothing timed out
    for q in queries[:3]:
        stage.handle("done", new_message(MessageType.DONE, q.id))
    assert len(stage.tick(now=1002.0)) == 3
    resent = stage.tick(now=1031.0)  # the 5 unanswered of the first batch time out
    assert len(resent) == 5 and all(m.meta["attempt"] == 2 for _, m in resent)


def test_restart_neither_repeats_steps_nor_loses_pending_items(tmp_path, sim):
    first = IngestStage(_config(tmp_path, sim))
    first.tick(now=1000.0)
    first.journal.close()
    again = IngestStage(_config(tmp_path, sim))
    routes = again.tick(now=1100.0)
    assert not [m for _, m in routes if m.type == MessageType.SNAPSHOT]
    assert len(routes) == 8 and again.journal.counts()["pending"] == 15
    assert again.store.scan().height == first.store.scan().height
