"""The work-item journal: one row per forecast query, ``pending -> done | failed``, and the
closed time steps with their snapshots still to send, in sqlite.

It is what makes the pipeline lose nothing (DESIGN.md invariant 1): ingest re-sends a pending
item whose ``done`` has not come back within a timeout, and bounds how many are in flight (a
credit window) so a slow stage is not flooded. sqlite gives atomic, durable state changes with
no server; every change is its own committed transaction, so SIGKILL at any moment is safe.

Why it lives in shared/: ingest is its only writer, but ``geopol status`` (shared/status.py)
reads it to show the backlog, and no shared module imports a stage's folder.

The rules, and why:

* **In flight** means sent at least once (it left the socket) and neither done nor failed. The
  window bounds that number, timed-out items included: an unanswered copy may still be queued
  downstream, so counting only recent sends would let a slow stage receive a fresh window every
  timeout.
* **Re-sends back off**: attempt ``a`` waits ``timeout * 2**(a-1)`` for its ``done`` before the
  next copy goes, so a backlog downstream that takes longer than the timeout to drain gets a
  shrinking trickle of copies instead of a full window every timeout.
* **Failed**: an item whose ``max_attempts``-th attempt went unanswered (or that cannot be sent
  at all) moves to ``failed`` with its reason and leaves the window, so items that always fail
  downstream cannot block newer ones. A late ``done`` still finishes it.
* **Clocks**: ``sent_at`` is on the monotonic clock of the process holding the journal, so a
  wall-clock step cannot stall or flood the window. That clock means nothing to another process,
  so :meth:`Journal.resume` counts the sends of an earlier process as made at its start: after a
  restart an unanswered item keeps its attempts and is re-sent one (backed-off) timeout later.
  ``created``, ``done_at`` and ``failed_at`` are wall-clock, for ordering and for people.
* **Snapshots** are journaled with their step: closing a step records it with no ``sent_at``,
  and :meth:`Journal.finish_snapshot` sets that once the snapshot has left the socket. So a
  process that dies with a snapshot unsent sends it after its restart, rebuilt from the event
  store, which no longer changes a closed step (see "Closed steps" in shared/event_store.py).
  Only the step is kept, not the message: the store holds its facts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of the current layout; 0 is the first one (no ``failed`` state), 1
the second (no ``closed_steps.sent_at``)."""

_ITEMS = """
CREATE TABLE IF NOT EXISTS items (
    id        TEXT PRIMARY KEY,
    step      INTEGER NOT NULL,
    meta      TEXT NOT NULL,
    state     TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    created   REAL NOT NULL,
    sent_at   REAL,
    attempts  INTEGER NOT NULL DEFAULT 0,
    done_at   REAL,
    failed_at REAL,
    reason    TEXT
);
"""
_SCHEMA = f"""
{_ITEMS}
CREATE INDEX IF NOT EXISTS items_pending ON items (state, sent_at);
CREATE TABLE IF NOT EXISTS closed_steps (
    step      INTEGER PRIMARY KEY,
    closed_at REAL NOT NULL,
    sent_at   REAL
);
"""
_V0_COLUMNS = "id, step, meta, state, created, sent_at, attempts, done_at"
_ORDER = "ORDER BY step, created, id"
_MAX_DOUBLINGS = 16
"""Cap on the backoff exponent, so an item sent very often (before failing existed) stays sane."""
_RESEND_AT = f"sent_at + :timeout * (1 << min(attempts - 1, {_MAX_DOUBLINGS}))"
"""When the current attempt of a sent item has waited long enough (SQL over one row)."""


@dataclass(frozen=True)
class WorkItem:
    """A query to forecast; ``meta`` is what travels in the message header."""

    id: str
    step: int
    meta: dict[str, Any]
    attempts: int = 0


class Journal:
    """Durable state of every work item and of which time steps were closed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)  # autocommit; explicit BEGINs
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            self._upgrade()

    def close(self) -> None:
        self._db.close()

    def add(self, items: Iterable[WorkItem], now: float | None = None) -> int:
        """Insert new items; ids already journaled are ignored. Returns how many were new."""
        now = time.time() if now is None else now
        rows = [(i.id, i.step, json.dumps(i.meta, sort_keys=True), now) for i in items]
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO items (id, step, meta, state, created) "
                "VALUES (?, ?, ?, 'pending', ?)",
                rows,
            )
            return self._db.total_changes - before

    def resume(self, now: float) -> int:
        """Count every unanswered send of an earlier process as made ``now`` (this clock).

        Their copies may still be downstream, so they stay in flight and time out from here.
        Returns how many items were in flight.
        """
        with self._transaction():
            cur = self._db.execute(
                "UPDATE items SET sent_at=? WHERE state='pending' AND attempts > 0", (now,)
            )
            return cur.rowcount

    def expire(self, now: float, timeout_s: float, max_attempts: int) -> dict[str, str]:
        """Fail the items whose ``max_attempts``-th attempt has gone unanswered.

        Returns each failed id with its reason.
        """
        rows = self._db.execute(
            f"SELECT id, attempts FROM items WHERE state='pending' AND attempts >= :max "
            f"AND {_RESEND_AT} <= :now",
            {"max": max_attempts, "timeout": timeout_s, "now": now},
        ).fetchall()
        failed = {item_id: f"no done after {attempts} attempts" for item_id, attempts in rows}
        if not failed:
            return failed
        with self._transaction():
            self._db.executemany(
                "UPDATE items SET state='failed', failed_at=?, reason=? WHERE id=?",
                [(time.time(), reason, item_id) for item_id, reason in failed.items()],
            )
        return failed

    def due(self, now: float, timeout_s: float, window: int) -> list[WorkItem]:
        """Items to send now: re-sends whose attempt timed out, then new items while the
        window has room, each group oldest first (see the module docstring for the rules)."""
        in_flight = self._db.execute(
            "SELECT COUNT(*) FROM items WHERE state='pending' AND attempts > 0"
        ).fetchone()[0]
        resend = self._db.execute(
            f"SELECT id, step, meta, attempts FROM items WHERE state='pending' AND attempts > 0 "
            f"AND {_RESEND_AT} <= :now {_ORDER}",
            {"timeout": timeout_s, "now": now},
        ).fetchall()
        fresh = self._db.execute(
            f"SELECT id, step, meta, attempts FROM items WHERE state='pending' AND attempts = 0 "
            f"{_ORDER} LIMIT ?",
            (max(0, window - in_flight),),
        ).fetchall()
        return [WorkItem(i, s, json.loads(m), a) for i, s, m, a in resend + fresh]

    def mark_sent(self, ids: Iterable[str], now: float) -> None:
        """Record that these items left the socket ``now`` (the monotonic clock)."""
        with self._transaction():
            self._db.executemany(
                "UPDATE items SET sent_at=?, attempts=attempts+1 WHERE id=? AND state='pending'",
                [(now, i) for i in ids],
            )

    def fail(self, item_id: str, reason: str, now: float | None = None) -> None:
        """Give up on a pending item: it leaves the window, keeping ``reason`` for people."""
        now = time.time() if now is None else now
        with self._transaction():
            self._db.execute(
                "UPDATE items SET state='failed', failed_at=?, reason=? "
                "WHERE id=? AND state='pending'",
                (now, reason, item_id),
            )

    def mark_done(self, item_id: str, now: float | None = None) -> bool:
        """Record a ``done`` (a failed item's late one too); False when the id is unknown or
        already done (a duplicate)."""
        now = time.time() if now is None else now
        with self._transaction():
            cur = self._db.execute(
                "UPDATE items SET state='done', done_at=? "
                "WHERE id=? AND state IN ('pending', 'failed')",
                (now, item_id),
            )
            return cur.rowcount == 1

    def counts(self) -> dict[str, int]:
        """Items per state, pending split into never sent (``pending``) and ``in_flight``."""
        rows = self._db.execute(
            "SELECT CASE WHEN state='pending' AND attempts > 0 THEN 'in_flight' ELSE state END, "
            "COUNT(*) FROM items GROUP BY 1"
        ).fetchall()
        return {"pending": 0, "in_flight": 0, "failed": 0, "done": 0, **dict(rows)}

    def failure_reasons(self) -> dict[str, int]:
        """How many items failed for each reason, most frequent first."""
        rows = self._db.execute(
            "SELECT reason, COUNT(*) AS n FROM items WHERE state='failed' "
            "GROUP BY reason ORDER BY n DESC, reason"
        ).fetchall()
        return dict(rows)

    def close_step(self, step: int, now: float | None = None) -> bool:
        """Remember that ``step`` was closed (its next queries journaled), its snapshot unsent.

        False when it was closed before."""
        now = time.time() if now is None else now
        with self._transaction():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO closed_steps (step, closed_at) VALUES (?, ?)", (step, now)
            )
            return cur.rowcount == 1

    def closed_steps(self) -> set[int]:
        return {s for (s,) in self._db.execute("SELECT step FROM closed_steps")}

    def unsent_snapshots(self) -> list[int]:
        """Closed steps whose snapshot has not left yet, oldest first (the order to send)."""
        rows = self._db.execute("SELECT step FROM closed_steps WHERE sent_at IS NULL ORDER BY step")
        return [s for (s,) in rows]

    def finish_snapshot(self, step: int, now: float | None = None) -> None:
        """Record that the snapshot of ``step`` left the socket, or can never be encoded (the
        graph stage then reads the step from the store); a later copy changes nothing."""
        now = time.time() if now is None else now
        with self._transaction():
            self._db.execute(
                "UPDATE closed_steps SET sent_at=? WHERE step=? AND sent_at IS NULL", (now, step)
            )

    def _upgrade(self) -> None:
        """Create the tables, or bring an older layout up to date: a version-0 ``items`` table
        is rebuilt (its CHECK constraint allows no ``failed`` state, and sqlite cannot alter a
        constraint in place); ``closed_steps`` before version 2 gains ``sent_at``, set for every
        step, because the process that closed them handed their snapshots on (and a graph that
        missed one reads the step from the store)."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version < 1 and self._has_table("items"):
            self._db.execute("DROP INDEX IF EXISTS items_pending")
            self._db.execute("ALTER TABLE items RENAME TO items_v0")
            self._db.execute(_ITEMS)
            self._db.execute(
                f"INSERT INTO items ({_V0_COLUMNS}) SELECT {_V0_COLUMNS} FROM items_v0"
            )
            self._db.execute("DROP TABLE items_v0")
        if version < 2 and self._has_table("closed_steps"):
            self._db.execute("ALTER TABLE closed_steps ADD COLUMN sent_at REAL")
            self._db.execute("UPDATE closed_steps SET sent_at=closed_at")
        for statement in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _has_table(self, name: str) -> bool:
        found = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)
        ).fetchone()
        return found is not None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` when the block raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
