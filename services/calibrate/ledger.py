"""The publisher's durable record (sqlite): every forecast once, with its sequence number.

Invariant 1 at the end of the pipeline. A forecast is *recorded* — its id, a sequence number and
the exact wire parts — in one transaction **before** it is published, and marked *sent* after.
So:

- a SCORES id seen again (a re-send from ingest, or the same id after a restart) finds its row
  and is never given a second sequence number: it is published at most once per sequence;
- after a SIGKILL between record and mark (the publish may or may not have left the process),
  the restart re-publishes the unsent rows with **their recorded sequence numbers**, and a
  subscriber drops any sequence it has already applied (zguide Clone pattern). Nothing is lost
  and nobody sees a forecast twice.

The same table serves snapshots to late subscribers (the latest forecasts and the sequence they
are current to) and holds what resolution needs (step, subject, relation; resolved or not).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS forecasts (
    seq      INTEGER PRIMARY KEY,
    id       TEXT NOT NULL UNIQUE,
    step     INTEGER NOT NULL,
    topic    TEXT NOT NULL,
    parts    BLOB NOT NULL,
    sent     INTEGER NOT NULL DEFAULT 0,
    resolved INTEGER NOT NULL DEFAULT 0,
    created  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS forecasts_unsent ON forecasts(sent) WHERE sent = 0;
CREATE INDEX IF NOT EXISTS forecasts_unresolved ON forecasts(step) WHERE resolved = 0;
CREATE TABLE IF NOT EXISTS scorecards (
    seq     INTEGER PRIMARY KEY,
    step    INTEGER NOT NULL UNIQUE,
    body    BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class Recorded:
    """One recorded forecast: its sequence number, topic and wire parts."""

    seq: int
    id: str
    step: int
    topic: str
    parts: list[bytes]


def pack_parts(parts: list[bytes]) -> bytes:
    """Length-prefixed concatenation of wire parts (4-byte little-endian length each)."""
    return b"".join(len(p).to_bytes(4, "little") + p for p in parts)


def unpack_parts(blob: bytes) -> list[bytes]:
    parts, at = [], 0
    while at < len(blob):
        size = int.from_bytes(blob[at : at + 4], "little")
        parts.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return parts


class Ledger:
    """Forecast records in one sqlite file. WAL mode: the snapshot thread reads through its own
    Ledger on the same file while the stage loop writes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # recorded means on disk
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def record(
        self,
        forecast_id: str,
        step: int,
        topic: str,
        build: Callable[[int], list[bytes]],
    ) -> Recorded | None:
        """Give a new id the next sequence number and store ``build(seq)``; None when the id
        was recorded before (it must not be published again)."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM forecasts WHERE id = ?", (forecast_id,)).fetchone():
                return None
            seq = self.last_seq() + 1
            parts = build(seq)
            db.execute(
                "INSERT INTO forecasts (seq, id, step, topic, parts, created) VALUES (?,?,?,?,?,?)",
                (seq, forecast_id, step, topic, pack_parts(parts), time.time()),
            )
        return Recorded(seq, forecast_id, step, topic, parts)

    def mark_sent(self, seq: int) -> None:
        self._db.execute("UPDATE forecasts SET sent = 1 WHERE seq = ?", (seq,))

    def last_seq(self) -> int:
        """The highest forecast sequence number given out (0 before the first)."""
        row = self._db.execute("SELECT MAX(seq) FROM forecasts").fetchone()
        return int(row[0] or 0)

    def _rows(self, query: str, args: tuple) -> list[Recorded]:
        return [
            Recorded(seq, fid, step, topic, unpack_parts(blob))
            for seq, fid, step, topic, blob in self._db.execute(query, args)
        ]

    def unsent(self) -> list[Recorded]:
        """Recorded but maybe never published (a crash between record and mark), oldest first."""
        return self._rows(
            "SELECT seq, id, step, topic, parts FROM forecasts WHERE sent = 0 ORDER BY seq", ()
        )

    def latest(self, prefix: str, limit: int, after: int = 0) -> list[Recorded]:
        """The latest ``limit`` forecasts whose topic starts with ``prefix`` and whose sequence
        is above ``after``, oldest first (a snapshot, or the forecasts a gap missed)."""
        rows = self._rows(
            "SELECT seq, id, step, topic, parts FROM forecasts WHERE seq > ? AND "
            "substr(topic, 1, ?) = ? ORDER BY seq DESC LIMIT ?",
            (after, len(prefix), prefix, limit),
        )
        return rows[::-1]

    def unresolved_steps(self) -> list[int]:
        return [
            int(r[0])
            for r in self._db.execute(
                "SELECT DISTINCT step FROM forecasts WHERE resolved = 0 ORDER BY step"
            )
        ]

    def of_step(self, step: int) -> list[Recorded]:
        return self._rows(
            "SELECT seq, id, step, topic, parts FROM forecasts WHERE step = ? ORDER BY seq",
            (step,),
        )

    def record_scorecard(self, step: int, build: Callable[[int], bytes]) -> int | None:
        """Mark the step's forecasts resolved and store its scorecard under the next scorecard
        sequence number (scorecards count apart from forecasts), in one transaction; None when
        the step was resolved before.

        A forecast that arrives for a step already scored (a late answer to a backlog) is marked
        resolved too, without a second card: one step has one published card, and left
        unresolved it would be scored again and thrown away on every tick."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM scorecards WHERE step = ?", (step,)).fetchone():
                db.execute("UPDATE forecasts SET resolved = 1 WHERE step = ?", (step,))
                return None
            row = db.execute("SELECT MAX(seq) FROM scorecards").fetchone()
            seq = int(row[0] or 0) + 1
            db.execute(
                "INSERT INTO scorecards (seq, step, body) VALUES (?,?,?)", (seq, step, build(seq))
            )
            db.execute("UPDATE forecasts SET resolved = 1 WHERE step = ?", (step,))
        return seq

    def scorecards(self, limit: int) -> list[tuple[int, int, bytes]]:
        """The latest ``limit`` scorecards as (seq, step, body), oldest first."""
        rows = self._db.execute(
            "SELECT seq, step, body FROM scorecards ORDER BY seq DESC LIMIT ?", (limit,)
        ).fetchall()
        return [(int(s), int(t), bytes(b)) for s, t, b in rows[::-1]]
