"""Ingest GDELT export files into the event store: read, quarantine, map, append.

One function per file so the ingest service (live polling) and the one-shot ``geopol ingest``
share exactly the same path; files already in the store are recognised by content hash and
skipped before they are parsed, and a file that cannot be read at all is quarantined whole
(``file_quarantine``) instead of stopping the run. The file is read once: the bytes that are
hashed are the bytes that are parsed, and only the columns the mapping uses are built (every row
is still checked).

Rows for a step the store is closed through are refused (late rows for a closed step never
change it; see "Closed steps" in ``shared/event_store.py``): they go to
``QUARANTINE_DIR/NAME.step_closed.jsonl`` with the reason, and the file's other rows are stored.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import polars as pl
from tqdm import tqdm

from services.ingest import cameo
from services.ingest.gdelt_reader import NotGdeltExportError, read_export, source_files
from services.ingest.mapping import NO_ACTOR, MappingConfig, to_quadruples
from shared.atomic import atomic_write
from shared.event_store import EventStore, IngestStats, KeyLabels
from shared.file_quarantine import FileQuarantine
from shared.log import get_logger
from shared.store_vocab import first_appearance

log = get_logger(__name__)

UNREADABLE: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, NotGdeltExportError)
"""What reading a file raises when the file itself, not the store or the disk, is at fault."""


def read_hashed(path: Path) -> tuple[bytes, str]:
    """The file's bytes and their hex sha256 (as ``shared.manifest.file_sha256`` gives it): one
    read serves both the already-ingested check and the parse."""
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def _labels(quads: pl.DataFrame, cfg: MappingConfig) -> KeyLabels:
    """Readable labels for the keys of this batch; CAMEO codes only (names label themselves).

    Keys are listed in row-major order of first appearance because the store registers
    labelled keys in this order: the same file must always give the same ids.
    """
    relations = {
        code: cameo.relation_label(code) for code in quads["relation"].unique(maintain_order=True)
    }
    if cfg.entity_key == "actor_name":
        return KeyLabels(relations=relations)
    actors = first_appearance(quads, ("subject", "object"))
    return KeyLabels(
        entities={
            code: "no second actor" if code == NO_ACTOR else cameo.actor_label(code)
            for code in actors
        },
        relations=relations,
    )


def _write_quarantine(rows: pl.DataFrame, quarantine_dir: Path, source: str) -> Path:
    path = quarantine_dir / f"{source}.jsonl"
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, rows.write_ndjson)
    return path


STEP_CLOSED = "step_closed"
"""Reason code of a row refused because its step was closed (its snapshot already emitted)."""


def _refuse_closed(
    quads: pl.DataFrame, store: EventStore, quarantine_dir: Path, source: str
) -> tuple[pl.DataFrame, int]:
    """The rows of open steps, and how many rows of closed steps went to the quarantine."""
    kept, late = store.split_closed(quads)
    if late.height:
        detail = pl.format("step {} is closed (through {})", "t", pl.lit(store.closed_through))
        rows = late.select(
            pl.lit(source).alias("source"), pl.lit(STEP_CLOSED).alias("reason"),
            detail.alias("detail"), pl.all(),
        )  # fmt: skip
        path = quarantine_dir / f"{source}.{STEP_CLOSED}.jsonl"
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, rows.write_ndjson)
        log.warning("rows_refused", source=source, file=str(path), **{STEP_CLOSED: late.height})
    return kept, late.height


def ingest_file(
    path: Path,
    store: EventStore,
    cfg: MappingConfig,
    quarantine_dir: Path,
    *,
    now: datetime | None = None,
) -> IngestStats | None:
    """Ingest one export; returns None when its content is already in the store."""
    data, sha = read_hashed(path)
    if store.has_source(sha):
        log.info("ingest_skipped", source=path.name, reason="already_ingested")
        return None
    read = read_export(path, now=now, columns=cfg.needed_columns, data=data)
    del data  # the rows are typed now; free the raw bytes before mapping and storing
    if read.quarantine.height:
        where = _write_quarantine(read.quarantine, quarantine_dir, path.name)
        log.warning("rows_quarantined", source=path.name, file=str(where), **read.quarantined)
    mapped = to_quadruples(read.rows, cfg)
    quads, refused = _refuse_closed(mapped.quads, store, quarantine_dir, path.name)
    read_stats = {
        "rows_read": read.rows_read,
        **{f"quarantined_{k}": v for k, v in read.quarantined.items()},
        **{f"filtered_{k}": v for k, v in mapped.dropped.items()},
        **({f"refused_{STEP_CLOSED}": refused} if refused else {}),
    }
    return store.append(
        quads,
        source=path.name,
        source_sha256=sha,
        labels=_labels(quads, cfg),
        read_stats=read_stats,
    )


def ingest_unless_quarantined(
    path: Path, store: EventStore, cfg: MappingConfig, quarantine: FileQuarantine
) -> IngestStats | None:
    """``ingest_file``, except that an unreadable file is quarantined (and then skipped while it
    is unchanged) instead of raising; returns None when nothing new was stored."""
    if quarantine.holds(path):
        return None
    try:
        stats = ingest_file(path, store, cfg, quarantine.root)
    except UNREADABLE as exc:
        record = quarantine.add(path, exc)
        log.warning(
            "file_quarantined",
            source=path.name,
            error=type(exc).__name__,
            reason=str(exc),
            record=str(record),
        )
        return None
    quarantine.release(path)
    return stats


def ingest_paths(
    paths: Iterable[Path],
    store: EventStore,
    cfg: MappingConfig,
    quarantine_dir: Path,
    *,
    progress: bool = True,
) -> list[IngestStats]:
    """Ingest every export file under each path (a file or a directory), in name order;
    unreadable files are quarantined under ``quarantine_dir`` and the rest still ingested."""
    files = [f for p in paths for f in source_files(Path(p))]
    quarantine = FileQuarantine(quarantine_dir)
    done: list[IngestStats] = []
    for path in tqdm(files, desc="ingest", unit="file", disable=not progress):
        stats = ingest_unless_quarantined(path, store, cfg, quarantine)
        if stats is not None:
            done.append(stats)
    return done
