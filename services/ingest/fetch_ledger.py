"""Which GDELT export files the live poller has fetched and ingested, kept across restarts.

Why a ledger: the poller runs for months and gets restarted (deploys, crashes, reboots). It must
neither skip a 15-minute slot nor download one twice, and a file downloaded just before a crash
must still reach the event store. Each export file name moves through these states::

    (absent) --fetched--> fetched --mark_ingested--> ingested
    (absent) --404 on a backfill URL--> missing

``fetched`` rows that never became ``ingested`` are what :meth:`FetchLedger.pending` returns on
start. ``missing`` remembers slots GDELT never published, so backfill stops asking for them.

Why sqlite: every change is a single transaction, so a crash leaves the old or the new row and
never a half-written file, without hand-rolled temp-file/rename code; and it is human-readable
with the ``sqlite3`` shell. Each call opens its own short connection, so a poller built on one
thread can be driven from another (``run_live`` in a worker thread).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

State = Literal["fetched", "ingested", "missing"]
Check = Literal["md5", "zip"]
"""How a fetched file was verified: against lastupdate's size+MD5, or only as an intact zip."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    name        TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('fetched', 'ingested', 'missing')),
    size        INTEGER,
    md5         TEXT,
    checked_by  TEXT CHECK (checked_by IN ('md5', 'zip')),
    fetched_at  TEXT,
    ingested_at TEXT
)
"""


class LedgerError(RuntimeError):
    """A ledger operation does not fit the recorded state (e.g. ingesting an unknown file)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FetchLedger:
    """The poller's durable memory: one sqlite row per export file name."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as conn:
            conn.execute(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A short connection whose statements commit together (or roll back on error)."""
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            yield conn

    def state(self, name: str) -> State | None:
        """The recorded state of ``name``; None when the ledger has never seen it."""
        with self._transaction() as conn:
            row = conn.execute("SELECT state FROM files WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def first_name(self) -> str | None:
        """The oldest known name; gap backfill never reaches before it (history is a separate,
        explicit fetch: ``LivePoller.fetch_history``)."""
        with self._transaction() as conn:
            row = conn.execute("SELECT min(name) FROM files").fetchone()
        return row[0]

    def states_between(self, first: str, last: str) -> dict[str, State]:
        """The state of every known name from ``first`` to ``last`` (inclusive; name order is
        time order)."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT name, state FROM files WHERE name BETWEEN ? AND ?", (first, last)
            ).fetchall()
        return {name: state for name, state in rows}

    def record_fetched(self, name: str, url: str, *, size: int, md5: str, check: Check) -> None:
        """Note a verified file now under its final name; it is ``pending`` until ingested."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO files"
                " (name, url, state, size, md5, checked_by, fetched_at, ingested_at)"
                " VALUES (?, ?, 'fetched', ?, ?, ?, ?, NULL)",
                (name, url, size, md5, check, _now()),
            )

    def record_missing(self, name: str, url: str) -> None:
        """Note a slot the server does not have (HTTP 404), so backfill stops asking for it."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO files (name, url, state) VALUES (?, ?, 'missing')",
                (name, url),
            )

    def mark_ingested(self, name: str) -> None:
        """Close the cycle of a fetched file; idempotent, as a retry after a crash may repeat it."""
        with self._transaction() as conn:
            row = conn.execute("SELECT state FROM files WHERE name = ?", (name,)).fetchone()
            if row is None or row[0] == "missing":
                raise LedgerError(f"{self.path}: cannot mark {name!r} ingested: it was not fetched")
            conn.execute(
                "UPDATE files SET state = 'ingested', ingested_at = ?"
                " WHERE name = ? AND state = 'fetched'",
                (_now(), name),
            )

    def forget(self, name: str) -> None:
        """Drop a row so the file is fetched again (its download vanished before ingest)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM files WHERE name = ?", (name,))

    def pending(self) -> list[str]:
        """Names fetched but not yet ingested, oldest first (ingest order = time order)."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT name FROM files WHERE state = 'fetched' ORDER BY name"
            ).fetchall()
        return [row[0] for row in rows]
