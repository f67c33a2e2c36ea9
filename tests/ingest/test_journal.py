"""The work-item journal: pending -> done, re-send after timeout, bounded in-flight window."""

from __future__ import annotations

from services.ingest.journal import Journal, WorkItem


def items(n: int, step: int = 5) -> list[WorkItem]:
    return [WorkItem(f"q{i}", step, {"subject": i}) for i in range(n)]


def test_add_is_idempotent_and_survives_reopen(tmp_path):
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    assert journal.add(items(3)) == 3
    assert journal.add(items(4)) == 1
    journal.close()
    reopened = Journal(path)
    assert reopened.counts() == {"pending": 4, "done": 0}
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


def test_done_twice_or_unknown_is_reported(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.add(items(1))
    assert journal.mark_done("q0") is True
    assert journal.mark_done("q0") is False
    assert journal.mark_done("nope") is False
    assert journal.counts() == {"pending": 0, "done": 1}
    assert journal.due(1e12, 1, 10) == []


def test_closed_steps_are_remembered(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    assert journal.close_step(7) is True
    assert journal.close_step(7) is False
    assert Journal(tmp_path / "j.sqlite").closed_steps() == {7}
