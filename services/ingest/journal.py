"""The work-item journal: one row per forecast query, ``pending -> done``, in sqlite.

It is what makes the pipeline lose nothing (DESIGN.md invariant 1): ingest re-sends a pending
item whose ``done`` has not come back within a timeout, and bounds how many are in flight (a
credit window) so a slow stage is not flooded. sqlite gives atomic, durable state changes with
no server; every change is its own committed transaction, so SIGKILL at any moment is safe.
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id       TEXT PRIMARY KEY,
    step     INTEGER NOT NULL,
    meta     TEXT NOT NULL,
    state    TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    created  REAL NOT NULL,
    sent_at  REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    done_at  REAL
);
CREATE INDEX IF NOT EXISTS items_pending ON items (state, sent_at);
CREATE TABLE IF NOT EXISTS closed_steps (step INTEGER PRIMARY KEY, closed_at REAL NOT NULL);
"""


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
        self._db.executescript(_SCHEMA)

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

    def due(self, now: float, timeout_s: float, window: int) -> list[WorkItem]:
        """Pending items to (re)send now, oldest first, without exceeding ``window`` in flight.

        An item is in flight when it was sent less than ``timeout_s`` ago and is not done.
        """
        in_flight = self._db.execute(
            "SELECT COUNT(*) FROM items WHERE state='pending' AND sent_at > ?", (now - timeout_s,)
        ).fetchone()[0]
        credit = max(0, window - in_flight)
        rows = self._db.execute(
            "SELECT id, step, meta, attempts FROM items WHERE state='pending' "
            "AND (sent_at IS NULL OR sent_at <= ?) ORDER BY step, created, id LIMIT ?",
            (now - timeout_s, credit),
        ).fetchall()
        return [WorkItem(i, s, json.loads(m), a) for i, s, m, a in rows]

    def mark_sent(self, ids: Iterable[str], now: float) -> None:
        with self._transaction():
            self._db.executemany(
                "UPDATE items SET sent_at=?, attempts=attempts+1 WHERE id=? AND state='pending'",
                [(now, i) for i in ids],
            )

    def mark_done(self, item_id: str, now: float | None = None) -> bool:
        """Record a ``done``; False when the id is unknown or already done (a duplicate)."""
        now = time.time() if now is None else now
        with self._transaction():
            cur = self._db.execute(
                "UPDATE items SET state='done', done_at=? WHERE id=? AND state='pending'",
                (now, item_id),
            )
            return cur.rowcount == 1

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall()
        return {"pending": 0, "done": 0, **dict(rows)}

    def close_step(self, step: int, now: float | None = None) -> bool:
        """Remember that ``step`` was closed (its snapshot and next queries emitted)."""
        now = time.time() if now is None else now
        with self._transaction():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO closed_steps (step, closed_at) VALUES (?, ?)", (step, now)
            )
            return cur.rowcount == 1

    def closed_steps(self) -> set[int]:
        return {s for (s,) in self._db.execute("SELECT step FROM closed_steps")}

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
