"""Supporting facts: what the event store says happened before a forecast, newest first.

Written once for two users that ask the store the same question, "the latest facts that match
this pattern before step t": the calibrate stage attaches to each forecast the recent facts that
link its subject to a top candidate (its evidence, see DESIGN.md), and a prompt can list a
subject's recent facts as text. Both read the event store, so this lives in shared/ beside
``shared/event_store.py`` and neither stage imports the other.

Strictly before: a forecast for step ``t`` is made when step ``t - 1`` closes, so a fact at ``t``
or later was not known then; showing it as evidence or in a prompt would leak the answer.

How it reads: the store keeps one parquet partition per step. The steps before ``before`` (only the
last ``window`` of them when given) are read newest first, in batches of 1, 2, 4, ... steps,
through ``EventStore.scan_lazy``, which lists only those steps' parts and pushes the match and
the column selection into the parquet read. The search stops once ``limit`` facts are found: an
entity active in the last steps costs a few partitions, not the whole history, and one with few
facts costs about log2(steps) passes over the window.

Order: newest step first; within a step, the order the store holds its rows (ingest order, then
row order within the source), so the same store always gives the same list.

Each call reads the partitions afresh; a caller asking for thousands of queries of one step may
prefer to collect the window once (``scan_lazy``) and filter it in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from shared.event_store import EventStore

_COLUMNS = ("t", "subject", "relation", "object", "event_id", "source_url")


@dataclass(frozen=True)
class Fact:
    """One stored quadruple: ids (the store vocabularies' ids) and their keys for display.

    ``event_id`` and ``source_url`` are GDELT's (GLOBALEVENTID, SOURCEURL); both are None for
    benchmark facts, and ``source_url`` also for GDELT 1.0 backfile rows and rows stored before the
    store had the column.
    """

    t: int
    subject: int
    relation: int
    object: int
    subject_key: str
    relation_key: str
    object_key: str
    event_id: int | None
    source_url: str | None


def recent_facts(
    store: EventStore, subject: int, before: int, limit: int, window: int | None = None
) -> list[Fact]:
    """The ``limit`` most recent facts with subject ``subject`` at steps ``t < before``, newest
    first; with ``window``, only steps ``before - window <= t < before``.

    Only facts where the entity is the subject: for an inverse-relation query, pass the entity
    that stands as subject in the store.
    """
    return _newest_first(store, pl.col("subject") == subject, before, limit, window)


def supporting_facts(
    store: EventStore,
    subject: int,
    candidate: int,
    before: int,
    limit: int,
    window: int | None = None,
) -> list[Fact]:
    """The ``limit`` most recent facts at steps ``t < before`` linking ``subject`` and
    ``candidate`` in either direction, under any relation, newest first; ``window`` as in
    ``recent_facts``.

    Any relation, because evidence for "s does r to c" includes what else passed between them
    (a meeting before an agreement, a threat before a clash).
    """
    s, o = pl.col("subject"), pl.col("object")
    link = ((s == subject) & (o == candidate)) | ((s == candidate) & (o == subject))
    return _newest_first(store, link, before, limit, window)


def _newest_first(
    store: EventStore, match: pl.Expr, before: int, limit: int, window: int | None
) -> list[Fact]:
    """Facts matching ``match`` before step ``before``, newest first, read a batch of steps at a
    time from the newest back until ``limit`` are found (see the module docstring)."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 or None, got {window}")
    oldest = None if window is None else before - window
    steps = [t for t in reversed(store.steps()) if t < before and (oldest is None or t >= oldest)]
    found: list[pl.DataFrame] = []
    count, start, size = 0, 0, 1
    while count < limit and start < len(steps):
        batch = steps[start : start + size]  # descending; exactly the steps in its t range
        rows = store.scan_lazy(t_min=batch[-1], t_max=batch[0]).filter(match).select(_COLUMNS)
        # Storage order comes out of the scan; a stable sort keeps it among rows of one step.
        newest = rows.collect().sort("t", descending=True, maintain_order=True)
        found.append(newest.head(limit - count))
        count += found[-1].height
        start, size = start + size, 2 * size
    if not found:
        return []
    return _as_facts(store, pl.concat(found))


def _as_facts(store: EventStore, rows: pl.DataFrame) -> list[Fact]:
    """Rows of ``_COLUMNS`` as ``Fact`` objects, keys looked up in the store's vocabularies."""
    entities, relations = store.entities, store.relations
    return [
        Fact(
            t=t,
            subject=s,
            relation=r,
            object=o,
            subject_key=entities.key(s),
            relation_key=relations.key(r),
            object_key=entities.key(o),
            event_id=event_id,
            source_url=source_url,
        )
        for t, s, r, o, event_id, source_url in rows.iter_rows()
    ]
