"""The ingest stage without the runtime: files in, snapshots and journaled queries out."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
import zmq
from structlog.testing import capture_logs

from services.ingest import export_ingest
from services.ingest.service import IngestStage, nonblocking_send
from services.ingest.simulator import WorldParams, simulate
from shared.config import Config, SocketConfig
from shared.ids import frame_to_ids
from shared.journal import WorkItem
from shared.protocol import Limits, Message, MessageType, decode, encode, new_message
from shared.sockets import open_socket

START = datetime(2024, 1, 1, tzinfo=UTC)


def _config(tmp_path, source, **ingest) -> Config:
    settings = {
        "dataset": "SIM",
        "source": source,
        "min_free_mb": 0,
        "queries_per_step": 5,
        "resend_timeout_s": 30.0,
        "window": 8,
        "mapping": {"time_field": "dateadded", "step_minutes": 15},
        **ingest,
    }
    return Config(name="t", paths={"run_dir": tmp_path / "run"}, ingest=settings)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """The socket as the stage sees it: takes everything while ``open``, records what left."""

    def __init__(self) -> None:
        self.open = True
        self.sent: list[Message] = []

    def send(self, message: Message) -> bool:
        if self.open:
            self.sent.append(message)
        return self.open

    def take(self) -> list[Message]:
        taken, self.sent = self.sent, []
        return taken


def _queries(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.type == MessageType.QUERY]


def _done(stage: IngestStage, message: Message) -> None:
    stage.handle("done", new_message(MessageType.DONE, message.id))


@pytest.fixture()
def sim(tmp_path):
    out = tmp_path / "sim"
    simulate(out, WorldParams(seed=1, events_per_step=30), steps=3, start=START)
    return out


def test_tick_closes_each_step_and_sends_queries_within_the_window(tmp_path, sim):
    wire, clock = Wire(), Clock()
    stage = IngestStage(_config(tmp_path, sim), wire.send, clock)
    assert stage.tick(1e9) == []  # the stage sends its own messages
    sent = wire.take()
    assert [m.type for m in sent[:3]] == [MessageType.SNAPSHOT] * 3
    queries = _queries(sent)
    assert len(queries) == 8  # window
    assert stage.journal.counts() == {"pending": 7, "in_flight": 8, "failed": 0, "done": 0}
    steps = sorted(m.meta["step"] for m in sent if m.type == MessageType.SNAPSHOT)
    assert {q.meta["step"] for q in queries} <= {s + 1 for s in steps}
    clock.now = 1.0
    stage.tick(1e9)
    assert wire.take() == []  # nothing new, window full, nothing timed out
    for q in queries[:3]:
        _done(stage, q)
    clock.now = 2.0
    stage.tick(1e9)
    assert len(wire.take()) == 3
    clock.now = 31.0  # the 5 unanswered of the first batch time out
    stage.tick(1e9)
    resent = wire.take()
    assert len(resent) == 5 and all(m.meta["attempt"] == 2 for m in resent)


def test_restart_neither_repeats_steps_nor_loses_pending_items(tmp_path, sim):
    wire = Wire()
    first = IngestStage(_config(tmp_path, sim), wire.send, Clock())
    first.tick(0.0)
    first.close()
    wire.take()
    again = IngestStage(_config(tmp_path, sim), wire.send, Clock())
    again.tick(0.0)
    assert wire.take() == []  # no step again; the 8 in flight keep the window until timeout
    assert again.journal.counts() == {"pending": 7, "in_flight": 8, "failed": 0, "done": 0}
    assert again.store.scan().height == first.store.scan().height


def test_poisoned_items_fail_out_and_the_good_ones_behind_them_all_go_within_one_timeout(
    tmp_path,
):
    """Issue 9, item 2: 300 items the pipeline never answers, queued ahead of 50 it does."""
    wire, clock = Wire(), Clock()
    config = _config(tmp_path, None, window=256, resend_timeout_s=10.0, max_attempts=3)
    stage = IngestStage(config, wire.send, clock)
    stage.journal.add(WorkItem(f"bad{i}", 5, {"subject": i}) for i in range(300))
    stage.journal.add(WorkItem(f"good{i}", 6, {"subject": i}) for i in range(50))
    good_sent_at: dict[str, float] = {}
    first_failure = None
    for second in range(200):
        clock.now = float(second)
        stage.tick(0.0)
        for message in wire.take():
            if message.id.startswith("good"):
                good_sent_at.setdefault(message.id, clock.now)
                _done(stage, message)
        if first_failure is None and stage.journal.counts()["failed"]:
            first_failure = clock.now
    assert first_failure is not None
    assert len(good_sent_at) == 50
    assert max(good_sent_at.values()) <= first_failure + 10.0
    assert stage.journal.counts() == {"pending": 0, "in_flight": 0, "failed": 300, "done": 50}
    assert stage.journal.failure_reasons() == {"no done after 3 attempts": 300}


def test_a_backlog_slower_than_the_timeout_gets_backed_off_copies_not_a_window_each_timeout(
    tmp_path,
):
    """Issue 9, item 5: nothing answers for ten timeouts (a slow stage holds the copies)."""
    wire, clock = Wire(), Clock()
    config = _config(tmp_path, None, window=10, resend_timeout_s=10.0, max_attempts=10)
    stage = IngestStage(config, wire.send, clock)
    stage.journal.add(WorkItem(f"q{i}", 5, {"subject": i}) for i in range(1000))
    for second in range(100):
        clock.now = float(second)
        stage.tick(0.0)
    copies = Counter(m.id for m in wire.take())
    assert len(copies) == 10  # no new item while the whole window is unanswered
    assert set(copies.values()) == {4}  # at 0 s, then after 10, 20 and 40 s more


def test_a_wall_clock_step_back_does_not_stall_resends(tmp_path):
    wire, clock = Wire(), Clock()
    stage = IngestStage(_config(tmp_path, None, resend_timeout_s=10.0), wire.send, clock)
    stage.journal.add([WorkItem("q0", 5, {"subject": 0})])
    stage.tick(1_700_000_000.0)
    clock.now = 11.0
    stage.tick(1_700_000_000.0 - 3600)  # the wall clock went back an hour
    assert [m.meta["attempt"] for m in wire.take()] == [1, 2]


def test_nothing_counts_as_sent_until_it_left_the_socket(tmp_path, sim):
    """Issue 9, item 5: with no peer nothing leaves, so nothing is in flight, no attempt is
    used up and no second copy waits anywhere, however long the peer stays away."""
    ctx = zmq.Context()
    push = open_socket(ctx, SocketConfig(pattern="push", endpoint="inproc://queries", bind=True))
    pull = ctx.socket(zmq.PULL)
    clock = Clock()
    stage = IngestStage(
        _config(tmp_path, sim), lambda m: nonblocking_send(push, m, Limits()), clock
    )
    try:
        stage.tick(0.0)
        clock.now = 1000.0
        stage.tick(0.0)
        assert stage.journal.counts() == {"pending": 15, "in_flight": 0, "failed": 0, "done": 0}
        pull.connect("inproc://queries")
        assert push.poll(5000, zmq.POLLOUT)  # the peer is attached
        clock.now = 1001.0
        stage.tick(0.0)
        received = []
        while pull.poll(500):
            received.append(decode(pull.recv_multipart()))
    finally:
        stage.close()
        pull.close(linger=0)
        push.close(linger=0)
        ctx.term()
    assert [m.type for m in received] == [MessageType.SNAPSHOT] * 3 + [MessageType.QUERY] * 8
    assert len({m.id for m in received}) == 11
    assert {m.meta["attempt"] for m in _queries(received)} == {1}


def test_a_query_that_cannot_be_encoded_fails_with_its_reason_and_the_rest_go(tmp_path):
    wire = Wire()

    def encoding_send(message: Message) -> bool:
        encode(message, Limits())  # the real encoder refuses what cannot travel
        return wire.send(message)

    stage = IngestStage(_config(tmp_path, None), encoding_send, Clock())
    stage.journal.add(
        [WorkItem("huge", 5, {"note": "x" * 100_000}), WorkItem("ok", 5, {"subject": 1})]
    )
    stage.tick(0.0)
    assert [m.id for m in wire.take()] == ["ok"]
    (reason,) = stage.journal.failure_reasons()
    assert reason.startswith("cannot be sent: header of message 'huge'")


def _truncated_zip(tmp_path, export) -> bytes:
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(export, export.name)
    data = archive.read_bytes()
    return data[: len(data) // 2]


def test_unreadable_files_are_quarantined_once_and_read_again_only_when_changed(
    tmp_path, monkeypatch
):
    """Issue 9, item 3: a truncated .zip and a stray .csv neither crash the stage nor get read
    on every tick or restart; a changed file is read again."""
    sim = tmp_path / "sim"
    simulate(sim, WorldParams(seed=1, events_per_step=30), steps=4, start=START)
    exports = sorted(sim.glob("*.export.CSV"))
    source = tmp_path / "src"
    source.mkdir()
    for export in exports[:3]:
        shutil.copy(export, source)
    (source / "20240101090000.export.CSV.zip").write_bytes(_truncated_zip(tmp_path, exports[0]))
    stray = source / "notes.csv"
    stray.write_text("name,count\nfoo,1\n")
    reads: Counter[str] = Counter()
    real_read = export_ingest.read_export

    def counting_read(path, **kwargs):
        reads[path.name] += 1
        return real_read(path, **kwargs)

    monkeypatch.setattr(export_ingest, "read_export", counting_read)
    wire = Wire()
    stage = IngestStage(_config(tmp_path, source), wire.send, Clock())
    with capture_logs() as logs:
        stage.tick(0.0)
        stage.tick(0.0)
    assert len([m for m in wire.take() if m.type == MessageType.SNAPSHOT]) == 3
    quarantined = {e["source"]: e["error"] for e in logs if e["event"] == "file_quarantined"}
    assert quarantined == {
        "20240101090000.export.CSV.zip": "BadZipFile",
        "notes.csv": "NotGdeltExportError",
    }
    record = stage.quarantine.directory / "notes.csv.json"
    assert "not a GDELT event export" in record.read_text()
    assert stage.quarantine.count() == 2
    stage.close()

    restarted = IngestStage(_config(tmp_path, source), wire.send, Clock())
    restarted.tick(0.0)
    stat = stray.stat()
    os.utime(stray, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same bytes
    restarted.tick(0.0)
    assert reads["notes.csv"] == 1 and reads["20240101090000.export.CSV.zip"] == 1
    shutil.copy(exports[3], stray)  # now it is an export after all
    restarted.tick(0.0)
    assert reads["notes.csv"] == 2
    assert [m.meta["step"] for m in wire.take() if m.type == MessageType.SNAPSHOT] == [
        restarted.store.steps()[-1]
    ]
    assert restarted.quarantine.count() == 1


def test_a_full_disk_pauses_reading_but_not_sending(tmp_path, sim):
    wire, clock = Wire(), Clock()
    stage = IngestStage(_config(tmp_path, sim), wire.send, clock)
    stage.journal.add([WorkItem("q0", 5, {"subject": 0})])
    stage.store.min_free_bytes = 1 << 62  # the disk is "full"
    with capture_logs() as logs:
        stage.tick(0.0)
    assert [m.id for m in wire.take()] == ["q0"]  # still serving
    assert any(e["event"] == "ingest_paused" and "min_free_bytes" in e["error"] for e in logs)
    stage.store.min_free_bytes = 0  # space freed
    clock.now = 30.0
    stage.tick(0.0)
    assert stage.store.steps() == []  # backing off
    clock.now = 61.0
    stage.tick(0.0)
    assert len(stage.store.steps()) == 3
    assert [m.type for m in wire.take()].count(MessageType.SNAPSHOT) == 3


def _reissued(export, id_offset: int, dateadded: str | None = None) -> str:
    """The rows of ``export`` as new events (other ids), optionally added at another time."""
    lines = []
    for line in export.read_text().splitlines():
        fields = line.split("\t")
        fields[0] = str(int(fields[0]) + id_offset)
        if dateadded is not None:
            fields[-2] = dateadded  # DATEADDED, before SOURCEURL
        lines.append("\t".join(fields))
    return "".join(f"{line}\n" for line in lines)


def test_late_rows_for_a_closed_step_are_quarantined_with_their_reason(tmp_path, sim):
    """Issue 9, item 7: a file bringing rows for a closed step leaves that step as its
    snapshot said (the refused rows go to the quarantine with the reason); its rows for an open
    step are stored, and only that step's snapshot is sent."""
    wire = Wire()
    stage = IngestStage(_config(tmp_path, sim), wire.send, Clock())
    stage.tick(0.0)
    closed = stage.store.steps()
    snapshots = {t: stage.store.snapshot(t) for t in closed}
    exports = sorted(sim.glob("*.export.CSV"))
    late = _reissued(exports[0], 10**8) + _reissued(exports[2], 2 * 10**8, "20240101004500")
    late_file = sim / "20240101004500.export.CSV"
    late_file.write_text(late)
    wire.take()
    with capture_logs() as logs:
        stage.tick(0.0)
    for t in closed:
        np.testing.assert_array_equal(stage.store.snapshot(t), snapshots[t])
    (new_step,) = set(stage.store.steps()) - set(closed)
    sent = [m.meta["step"] for m in wire.take() if m.type == MessageType.SNAPSHOT]
    assert sent == [new_step]
    refused = pl.read_ndjson(stage.config.quarantine_dir / f"{late_file.name}.step_closed.jsonl")
    assert refused.height == len(snapshots[closed[0]])  # the same rows, new event ids
    assert set(refused["t"]) == {closed[0]} and set(refused["reason"]) == {"step_closed"}
    assert set(refused["detail"]) == {f"step {closed[0]} is closed (through {closed[-1]})"}
    (event,) = [e for e in logs if e["event"] == "rows_refused"]
    assert (event["source"], event["step_closed"]) == (late_file.name, refused.height)


def test_a_snapshot_still_waiting_when_ingest_dies_is_sent_after_the_restart(tmp_path, sim):
    """Issue 9, item 7: close_step is journaled with its snapshot, so a stage that dies with
    the snapshot unsent sends it, in order and before the next step's queries, once back."""
    wire = Wire()
    wire.open = False  # no graph attached: nothing leaves
    first = IngestStage(_config(tmp_path, sim), wire.send, Clock())
    first.tick(0.0)
    steps = first.store.steps()
    assert first.journal.closed_steps() == set(steps)
    first.close()  # dies; only the journal and the store remain
    wire.open = True
    again = IngestStage(_config(tmp_path, sim), wire.send, Clock())
    again.tick(0.0)
    sent = wire.take()
    assert [m.meta["step"] for m in sent[:3]] == steps
    assert [m.type for m in sent] == [MessageType.SNAPSHOT] * 3 + [MessageType.QUERY] * 8
    for message in sent[:3]:
        np.testing.assert_array_equal(
            frame_to_ids(message.frames[0]), again.store.snapshot(message.meta["step"])
        )
    again.tick(0.0)
    assert wire.take() == []
