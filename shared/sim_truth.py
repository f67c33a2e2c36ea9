"""The simulator's ground truth as its readers see it: the file layout and one query's answer.

``geopol simulate`` (services/ingest/simulator) writes, for every 15-minute slot, the exact
``P(object | subject, root relation)`` of the events it will draw in that slot, given the world's
state after the previous slot (``truth/<DATEADDED>.parquet``, columns below, CAMEO actor codes and
two-digit root codes: the SIM store's keys). The calibrate stage compares each forecast with it,
which tells calibration error apart from plain bad luck. Both sides agree on the layout here.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

import polars as pl

from shared.event_store import step_start

TRUTH_DIR = "truth"
SLOT_MINUTES = 15
"""Length of one simulated slot: a store step of this length is one slot."""
TRUTH_SCHEMA: dict[str, pl.DataType] = {
    "t": pl.Int64(),
    "subject": pl.String(),
    "relation": pl.String(),
    "object": pl.String(),
    "prob": pl.Float64(),
}
"""Columns and types of every truth file (``t`` is the slot index from the run's start)."""


def truth_file(source: Path, moment: datetime) -> Path:
    """The truth file of the slot starting at ``moment`` (its DATEADDED stamp)."""
    return source / TRUTH_DIR / f"{moment.strftime('%Y%m%d%H%M%S')}.parquet"


@lru_cache(maxsize=64)
def _slot(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    frame = pl.read_parquet(path)
    out: dict[tuple[str, str], dict[str, float]] = {}
    for subject, relation, obj, prob in frame.select(
        "subject", "relation", "object", "prob"
    ).iter_rows():
        out.setdefault((subject, relation), {})[obj] = prob
    return out


def distribution(
    source: Path, t: int, step_minutes: int, subject: str, relation: str
) -> dict[str, float] | None:
    """``object key -> P(object | subject, relation)`` at store step ``t``; None when the run
    has no truth for that step (not a simulated source, or steps other than one slot)."""
    if step_minutes != SLOT_MINUTES:
        return None
    return slot_distribution(source, step_start(t, step_minutes), subject, relation)


def slot_distribution(
    source: Path, moment: datetime, subject: str, relation: str
) -> dict[str, float] | None:
    """``object key -> P(object | subject, relation)`` in the slot starting at ``moment``; None
    when the run has no truth file for that slot."""
    path = truth_file(source, moment)
    if not path.is_file():
        return None
    return _slot(path).get((subject, relation), {})
