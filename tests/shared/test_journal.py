"""The work-item journal: pending -> done or failed, backed-off re-sends, a window of real sends."""

from __future__ import annotations

import sqlite3

from shared.journal import SCHEMA_VERSION, Journal, WorkItem


def items(n: int, step: int = 5, prefix: str = "q") -> list[WorkItem]:
    return [WorkItem(f"{prefix}{i}", step, {"subject": i}) for i in range(n)]


def test_add_is_idempotent_and_survives_reopen(tmp_path):
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    assert journal.add(items(3)) == 3
    assert journal.add(items(4)) == 1
    journal.close()
    reopened = Journal(path)
    assert reopened.counts() == {"pending": 4, "in_flight": 0, "failed": 0, "done": 0}
    assert [i.meta for i in reopened.due(100.0, 10, 10)][:2] == [{"subject": 0}, {"subject": 1}]


def test_window_bounds_in_flight_and_timeout_resends(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.add(items(5))
    first = journal.due(now=100.0, timeout_s=10, window=2)
    assert [i.id for i in first] == ["q0", "q1"]
    journal.mark_sent([i.id for i in first], 100.0)
    assert journal.due(now=105.0, timeout_s=10, window=2) == []  # window full
    assert journal.mark_done("q0", 106.0)
    assert [i.id for i in journal.due(now=106.0, timeout_s=10, window=2)] == ["q2"]
    journal.mark_sent(["q2"], 106.0)
    late = journal.due(now=111.0, timeout_s=10, window=2)  # q1 timed out -> due again
    assert [(i.id, i.attempts) for i in late] == [("q1", 1)]
    assert journal.counts() == {"pending": 2, "in_flight": 2, "failed": 0, "done": 1}


def test_a_timed_out_item_keeps_its_slot_and_each_copy_waits_twice_as_long(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.add(items(3))
    journal.mark_sent(["q0"], 0.0)
    assert [i.id for i in journal.due(10.0, timeout_s=10, window=1)] == ["q0"]  # no fresh one
    journal.mark_sent(["q0"], 10.0)
    assert journal.due(29.0, timeout_s=10, window=1) == []  # attempt 2 waits 20 s
    assert [i.id for i in journal.due(30.0, timeout_s=10, window=1)] == ["q0"]


def test_an_item_out_of_attempts_fails_with_its_reason_and_frees_the_window(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.add(items(2))
    for sent_at in (0.0, 10.0):
        journal.mark_sent(["q0"], sent_at)
    assert journal.expire(29.0, timeout_s=10, max_attempts=2) == {}
    assert journal.expire(30.0, timeout_s=10, max_attempts=2) == {"q0": "no done after 2 attempts"}
    assert journal.counts() == {"pending": 1, "in_flight": 0, "failed": 1, "done": 0}
    assert journal.failure_reasons() == {"no done after 2 attempts": 1}
    assert [i.id for i in journal.due(30.0, timeout_s=10, window=1)] == ["q1"]
    assert journal.mark_done("q0")  # a late answer still finishes it
    assert journal.counts()["done"] == 1 and journal.failure_reasons() == {}


def test_done_twice_or_unknown_is_reported(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.add(items(1))
    assert journal.mark_done("q0") is True
    assert journal.mark_done("q0") is False
    assert journal.mark_done("nope") is False
    assert journal.counts() == {"pending": 0, "in_flight": 0, "failed": 0, "done": 1}
    assert journal.due(1e12, 1, 10) == []


def test_sends_of_an_earlier_process_time_out_from_its_restart(tmp_path):
    """sent_at is on a monotonic clock, which means nothing across processes: a restart
    counts the old sends as made at its start, so they are neither re-sent at once nor never."""
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal.add(items(2))
    journal.mark_sent(["q0"], 90_000.0)  # the old process's clock (e.g. a long uptime)
    journal.close()
    restarted = Journal(path)
    assert restarted.resume(now=3.0) == 1  # the new process's clock starts low
    assert restarted.due(12.0, timeout_s=10, window=1) == []
    assert [(i.id, i.attempts) for i in restarted.due(13.0, timeout_s=10, window=1)] == [("q0", 1)]


def test_a_journal_of_the_first_layout_is_upgraded_in_place(tmp_path):
    path = tmp_path / "j.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE items (id TEXT PRIMARY KEY, step INTEGER NOT NULL, meta TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'done')), created REAL NOT NULL,
            sent_at REAL, attempts INTEGER NOT NULL DEFAULT 0, done_at REAL);
        CREATE INDEX items_pending ON items (state, sent_at);
        CREATE TABLE closed_steps (step INTEGER PRIMARY KEY, closed_at REAL NOT NULL);
        INSERT INTO items VALUES ('a', 1, '{}', 'pending', 1.0, 5.0, 40, NULL);
        INSERT INTO items VALUES ('b', 1, '{}', 'done', 1.0, 5.0, 1, 6.0);
        INSERT INTO closed_steps VALUES (0, 1.0);
        """
    )
    db.close()
    journal = Journal(path)
    assert journal.counts() == {"pending": 0, "in_flight": 1, "failed": 0, "done": 1}
    assert journal.closed_steps() == {0}
    assert journal.unsent_snapshots() == []  # the old process handed them to its outbox
    assert journal.expire(1e9, timeout_s=10, max_attempts=4) == {"a": "no done after 40 attempts"}
    assert journal.counts()["failed"] == 1
    journal.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_closed_steps_are_remembered(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    assert journal.close_step(7) is True
    assert journal.close_step(7) is False
    assert Journal(tmp_path / "j.sqlite").closed_steps() == {7}


def test_a_closed_steps_snapshot_waits_in_the_journal_until_it_has_left(tmp_path):
    """Issue 9, item 7: the snapshot is journaled with its step, so a process that dies with
    it unsent sends it after the restart."""
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    for step in (9, 7, 8):
        journal.close_step(step)
    journal.finish_snapshot(8)
    journal.close()
    reopened = Journal(path)
    assert reopened.unsent_snapshots() == [7, 9]
    reopened.finish_snapshot(7)
    reopened.finish_snapshot(7)  # a second copy left too: harmless
    assert reopened.unsent_snapshots() == [9]
    assert reopened.closed_steps() == {7, 8, 9}


def test_a_journal_of_the_second_layout_keeps_its_closed_steps_as_sent(tmp_path):
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.executescript(
        """
        DROP TABLE closed_steps;
        CREATE TABLE closed_steps (step INTEGER PRIMARY KEY, closed_at REAL NOT NULL);
        INSERT INTO closed_steps VALUES (3, 1.0), (4, 2.0);
        PRAGMA user_version=1;
        """
    )
    db.close()
    journal = Journal(path)
    assert journal.closed_steps() == {3, 4} and journal.unsent_snapshots() == []
    journal.close_step(5)
    assert journal.unsent_snapshots() == [5]
