"""Append-only quadruple event store: one directory per dataset, parquet partitions per step.

Layout under ``root``::

    store.json                        schema version, step_minutes, creation time
    entities.tsv, relations.tsv       Vocabulary files (key -> int id, append-only)
    quads/t=<step>/part-<id>.parquet  rows of one ingest at one time step, keys as int32 ids
    event_ids.i64                     GDELT event ids stored so far, raw little-endian int64
    ingested.jsonl                    the commit log: one line per ingested source
    stats/<id>.json                   statistics of each ingest
    pending.json                      intent record of an ingest in progress (absent when idle)
    closed.json                       the newest closed step (absent until a step closes)

Crash safety: the line in ``ingested.jsonl`` is the commit point of an ingest. It records the
vocabulary sizes and the event-id count after that ingest, so everything written before it is
either invisible or rolled back until it lands:

- part files are named after the source sha256; readers open only parts of committed ingests
  and the next writer deletes the parts a stale ``pending.json`` announced;
- vocabularies only grow, so the committed vocabulary is the prefix of the recorded size;
- the event-id file is truncated back to the committed count.

A rerun of a crashed ingest therefore starts from exactly the committed state and writes each row
once. Writers serialise on an ``flock``; readers need no lock.

Closed steps: late rows for a closed step are refused. When a time step closes, the ingest stage
first closes the store through that step (:meth:`EventStore.close_through`), then emits the
step's snapshot and the next step's queries. From then on the store refuses any row for that step
or an earlier one, a step that had no rows included (:class:`ClosedStepError`); the ingest stage
splits such rows off first (:meth:`EventStore.split_closed`) and writes them to the quarantine
with the reason ``step_closed``. So the facts of every step before a query's step are fixed
before the query exists, and the graph's history for a query is the same whether it was built
from snapshot messages, rebuilt from the store after a restart, or built again for a re-sent
query: a middle stage answers the same id the same way (DESIGN.md invariant 1). Re-emitting a
corrected snapshot was rejected because an id answered before the correction and re-sent after
it would get another answer, and which one is published would depend on which copy was lost.
The cost: with ``time_field: sqldate`` (an event's own date) GDELT's later reports of older
events are refused; with ``dateadded`` a row's step is when GDELT added it, so only a file that
arrives out of order is. A store no step of which was ever closed (a benchmark, ``geopol
ingest``) takes rows for any step, as before.

Columns added later: ``source_url`` (the article a GDELT event was coded from) came after the first
stores were written, so older parts lack it. Readers scan with the full ``STORED_SCHEMA`` and
polars' ``missing_columns="insert"``, which reads it as null there, so old and new parts mix in
one store without a rewrite or a schema-version bump. A column added the same way must be
nullable.

Why it lives in shared/: the ingest stage is its only writer (``services/ingest/export_ingest.py``
for GDELT exports, ``tkg_ingest.py`` for benchmark folders), but other stages read it, and no stage
imports another's folder. Readers: the graph stage (its recent-history window, and the check of
the store's vocabularies against its artifact), the ingest stage itself (the snapshots it emits,
``datasets.py``, ``store_export.py``) and ``shared/facts.py`` (the supporting facts the calibrate
stage attaches to a forecast, and a prompt's list of recent facts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import structlog

from shared.atomic import atomic_write, atomic_write_bytes, fsync_dir
from shared.store_vocab import Vocabulary, first_appearance

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
DEFAULT_MIN_FREE_BYTES = 512 * 1024**2
SPLITS = ("train", "valid", "test")
TOP_RELATIONS = 10
_PART_ID_CHARS = 16  # hex chars of the source sha256 naming its part files
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY_COLUMNS = ("subject", "relation", "object")

# The contract with the readers of raw sources (services/ingest/mapping.py and the TKG loader):
# every batch has these columns ...
QUAD_SCHEMA = pl.Schema(
    {
        "event_id": pl.Int64,
        "subject": pl.String,
        "relation": pl.String,
        "object": pl.String,
        "t": pl.Int64,
        "goldstein": pl.Float64,
        "num_mentions": pl.Int64,
        "quad_class": pl.Int8,
    }
)
# ... and may have these, null when absent: the benchmark split of a TKG fact, the article URL
# of a GDELT event (GDELT 1.0 daily updates and 2.0 exports carry one; benchmarks do not).
OPTIONAL_SCHEMA = pl.Schema({"source_url": pl.String, "split": pl.String})
# What the parquet partitions hold: keys replaced by vocabulary ids.
STORED_SCHEMA = pl.Schema(
    {
        "subject": pl.Int32,
        "relation": pl.Int32,
        "object": pl.Int32,
        "t": pl.Int64,
        "event_id": pl.Int64,
        "goldstein": pl.Float64,
        "num_mentions": pl.Int64,
        "quad_class": pl.Int8,
        "source_url": pl.String,
        "split": pl.String,
    }
)


class StoreError(RuntimeError):
    """The store on disk is corrupt or does not match how it was opened."""


class DiskFloorError(StoreError):
    """Free disk under the store is below the configured floor; nothing was written."""


class ClosedStepError(StoreError):
    """A batch holds rows for a step the store was closed through; nothing was written."""


@dataclass(frozen=True)
class KeyLabels:
    """Human labels for entity/relation keys.

    Keys listed here are registered in mapping order before the batch's own keys, which lets a
    caller fix ids up front (the TKG loader registers entity2id in id order this way).
    """

    entities: Mapping[str, str | None] = field(default_factory=dict)
    relations: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestStats:
    """What one ``append`` did; logged as ``ingest_done`` and saved under ``stats/``.

    ``entity_oov_rate`` is the share of the batch's distinct entity keys (subjects and objects of
    all rows in) that the vocabulary did not hold before this batch.
    """

    source: str
    source_sha256: str
    rows_in: int
    kept: int
    duplicates_dropped: int
    new_entities: int
    new_relations: int
    entity_oov_rate: float
    top_relations: dict[str, int]
    steps_written: int
    read_stats: dict[str, int]
    already_ingested: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and structured logging."""
        return dataclasses.asdict(self)


@dataclass
class _State:
    """The committed state, derived from the commit log and the vocabulary files."""

    log_size: int  # bytes of ingested.jsonl when read (to notice other writers)
    committed_bytes: int  # bytes up to the end of the last complete line
    shas: set[str]
    parts_by_step: dict[int, list[str]]
    entities: Vocabulary
    relations: Vocabulary
    num_event_ids: int


class EventStore:
    """One dataset's quadruples, vocabularies and ingest history under ``root``."""

    def __init__(
        self, root: Path, *, step_minutes: int, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    ) -> None:
        if step_minutes <= 0:
            raise ValueError(f"step_minutes must be positive, got {step_minutes}")
        self.root = Path(root)
        self.step_minutes = step_minutes
        self.min_free_bytes = min_free_bytes
        self._seen: np.ndarray | None = None  # sorted committed event ids, loaded on first append
        self._open_meta()
        self._state = self._read_state()

    # ----------------------------------------------------------------- paths and metadata

    @property
    def _log_path(self) -> Path:
        return self.root / "ingested.jsonl"

    @property
    def _pending_path(self) -> Path:
        return self.root / "pending.json"

    @property
    def _closed_path(self) -> Path:
        return self.root / "closed.json"

    @property
    def _event_ids_path(self) -> Path:
        return self.root / "event_ids.i64"

    def _step_dir(self, t: int) -> Path:
        return self.root / "quads" / f"t={t}"

    def _part_path(self, t: int, part: str) -> Path:
        return self._step_dir(t) / f"part-{part}.parquet"

    def _open_meta(self) -> None:
        """Validate ``store.json`` of an existing store, or create a new store."""
        meta_path = self.root / "store.json"
        if meta_path.exists():
            meta = _read_json(meta_path)
            if meta.get("schema_version") != SCHEMA_VERSION:
                raise StoreError(
                    f"{meta_path}: schema_version {meta.get('schema_version')!r}, "
                    f"this code reads {SCHEMA_VERSION}"
                )
            if meta.get("step_minutes") != self.step_minutes:
                raise StoreError(
                    f"{meta_path}: store has step_minutes={meta.get('step_minutes')} but was "
                    f"opened with step_minutes={self.step_minutes}"
                )
            return
        self._check_disk_floor()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".lock").touch()
        created = datetime.now(UTC).isoformat(timespec="seconds")
        _write_json(
            meta_path,
            {
                "schema_version": SCHEMA_VERSION,
                "step_minutes": self.step_minutes,
                "created": created,
            },
        )
        log.info("store_created", root=str(self.root), step_minutes=self.step_minutes)

    def _check_disk_floor(self) -> None:
        """Refuse to write when the file system under the store is nearly full."""
        probe = self.root
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if free < self.min_free_bytes:
            raise DiskFloorError(
                f"refusing to write under {self.root}: {free} bytes free on {probe}, "
                f"below the floor of {self.min_free_bytes} bytes (min_free_bytes)"
            )

    # ----------------------------------------------------------------- committed state

    def _read_state(self) -> _State:
        """Rebuild the committed state from the commit log; uncommitted leftovers are ignored."""
        commits, committed_bytes, log_size = _read_commit_log(self._log_path)
        last = (
            commits[-1] if commits else {"num_entities": 0, "num_relations": 0, "num_event_ids": 0}
        )
        parts_by_step: dict[int, list[str]] = {}
        for commit in commits:
            for t in commit["steps"]:
                parts_by_step.setdefault(t, []).append(commit["part"])
        return _State(
            log_size=log_size,
            committed_bytes=committed_bytes,
            shas={commit["sha256"] for commit in commits},
            parts_by_step=parts_by_step,
            entities=self._committed_vocab("entities.tsv", last["num_entities"]),
            relations=self._committed_vocab("relations.tsv", last["num_relations"]),
            num_event_ids=last["num_event_ids"],
        )

    def _committed_vocab(self, name: str, size: int) -> Vocabulary:
        """The vocabulary file cut to its committed size (later keys belong to a crashed ingest)."""
        path = self.root / name
        vocab = Vocabulary.load(path) if path.exists() else Vocabulary()
        if len(vocab) < size:
            raise StoreError(f"{path}: holds {len(vocab)} keys but the commit log records {size}")
        return vocab.prefix(size)

    def refresh(self) -> None:
        """Pick up ingests committed by other processes since this object last looked."""
        size = self._log_path.stat().st_size if self._log_path.exists() else 0
        if size != self._state.log_size:
            self._state = self._read_state()

    def has_source(self, source_sha256: str) -> bool:
        """Whether a source with this content is committed; lets callers skip re-parsing it."""
        self.refresh()
        return source_sha256 in self._state.shas

    def _seen_ids(self) -> np.ndarray:
        """Sorted committed event ids (cached; reloaded when another writer added some)."""
        count = self._state.num_event_ids
        if self._seen is None or self._seen.size != count:
            ids = (
                np.fromfile(self._event_ids_path, dtype="<i8", count=count)
                if count
                else np.empty(0, dtype=np.int64)
            )
            if ids.size != count:
                raise StoreError(f"{self._event_ids_path}: {ids.size} ids, commit log says {count}")
            self._seen = _sorted_ids(ids.astype(np.int64))
        return self._seen

    # ----------------------------------------------------------------- write side

    def append(
        self,
        quads: pl.DataFrame,
        *,
        source: str,
        source_sha256: str,
        labels: KeyLabels | None = None,
        read_stats: Mapping[str, int] | None = None,
    ) -> IngestStats:
        """Add one source's quadruples; idempotent per source content (``source_sha256``).

        Event ids already stored (or repeated within the batch) are dropped; rows with a null
        event id (benchmark facts) are always kept.
        """
        if not _SHA256.fullmatch(source_sha256):
            raise ValueError(f"source_sha256 must be 64 lowercase hex chars, got {source_sha256!r}")
        batch = _validate_quads(quads)
        counts = {name: int(value) for name, value in (read_stats or {}).items()}
        self._check_disk_floor()
        with self._write_lock():
            self.refresh()
            self._recover()
            if source_sha256 in self._state.shas:
                return self._skip(batch, source, source_sha256, counts)
            self._refuse_closed(batch, source)
            return self._ingest(batch, source, source_sha256, labels or KeyLabels(), counts)

    @property
    def closed_through(self) -> int | None:
        """The newest closed step (every step up to it is closed), or None before the first.

        Read from disk each time: another process (the ingest stage) may close a step.
        """
        if not self._closed_path.exists():
            return None
        through = _read_json(self._closed_path).get("through")
        if not isinstance(through, int) or isinstance(through, bool) or through < 0:
            raise StoreError(f"{self._closed_path}: 'through' must be a step >= 0, got {through!r}")
        return through

    def close_through(self, step: int) -> None:
        """Close every step up to ``step``: no row for one of them is stored from now on.

        Durable before it returns, and never moves back, so a replayed close of an older step
        changes nothing. See "Closed steps" in the module docstring for why.
        """
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step must be >= 0, got {step!r}")
        with self._write_lock():
            current = self.closed_through
            if current is not None and current >= step:
                return
            closed = datetime.now(UTC).isoformat(timespec="seconds")
            _write_json(self._closed_path, {"through": step, "time": closed})

    def split_closed(self, quads: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """``quads`` as (rows of open steps, rows of closed steps), for a caller that keeps the
        open ones and quarantines the rest instead of having ``append`` refuse the batch."""
        through = self.closed_through
        late = pl.col("t") <= through if through is not None else pl.lit(False)
        return quads.filter(~late), quads.filter(late)

    def _refuse_closed(self, batch: pl.DataFrame, source: str) -> None:
        """Raise ClosedStepError when the batch holds a row for a closed step (under the lock,
        so no step closes between this check and the commit)."""
        through = self.closed_through
        if through is None:
            return
        late = batch.filter(pl.col("t") <= through)["t"]
        if late.len():
            steps = late.unique().sort().to_list()
            raise ClosedStepError(
                f"source {source!r}: {late.len()} rows for steps {steps[:10]}"
                f"{' ...' if len(steps) > 10 else ''}, and the store is closed through {through}; "
                "split them off with split_closed"
            )

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Serialise writers across processes (readers never take it)."""
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _recover(self) -> None:
        """Undo what a crashed ingest left behind, back to the committed state."""
        state = self._state
        if self._pending_path.exists():
            pending = _read_json(self._pending_path)
            if pending["sha256"] not in state.shas:
                self._delete_parts(pending["part"], pending["steps"])
                log.warning(
                    "ingest_rolled_back",
                    source=pending["source"],
                    sha256=pending["sha256"],
                    steps=len(pending["steps"]),
                )
            self._pending_path.unlink()
        for directory in (self.root, self.root / "stats"):
            for debris in directory.glob(".*.tmp"):
                debris.unlink()
        _truncate(self._log_path, state.committed_bytes)
        state.log_size = state.committed_bytes
        _truncate(self._event_ids_path, state.num_event_ids * 8)

    def _delete_parts(self, part: str, steps: list[int]) -> None:
        """Remove an uncommitted ingest's part files and any temp files it left."""
        for t in steps:
            part_path = self._part_path(t, part)
            part_path.unlink(missing_ok=True)
            for debris in part_path.parent.glob(f".{part_path.name}.*.tmp"):
                debris.unlink()

    def _skip(
        self, batch: pl.DataFrame, source: str, sha: str, counts: dict[str, int]
    ) -> IngestStats:
        """Stats of a source whose content is already in the store: nothing is written."""
        stats = IngestStats(
            source=source,
            source_sha256=sha,
            rows_in=batch.height,
            kept=0,
            duplicates_dropped=0,
            new_entities=0,
            new_relations=0,
            entity_oov_rate=0.0,
            top_relations={},
            steps_written=0,
            read_stats=counts,
            already_ingested=True,
        )
        log.info("ingest_skipped", source=source, sha256=sha, reason="already_ingested")
        return stats

    def _ingest(
        self, batch: pl.DataFrame, source: str, sha: str, labels: KeyLabels, counts: dict[str, int]
    ) -> IngestStats:
        """Compute everything in memory, then write parts, vocabularies, stats, ids, commit."""
        state = self._state
        entities = state.entities.prefix(len(state.entities))
        relations = state.relations.prefix(len(state.relations))
        oov = entities.oov_rate(_distinct_entities(batch))
        entities.add(list(labels.entities), labels.entities)
        relations.add(list(labels.relations), labels.relations)
        kept = batch.filter(self._keep_mask(batch))
        stored = _encode(kept, entities, relations)
        stats = IngestStats(
            source=source,
            source_sha256=sha,
            rows_in=batch.height,
            kept=kept.height,
            duplicates_dropped=batch.height - kept.height,
            new_entities=len(entities) - len(state.entities),
            new_relations=len(relations) - len(state.relations),
            entity_oov_rate=oov,
            top_relations=_top_relations(kept),
            steps_written=stored["t"].n_unique(),
            read_stats=counts,
        )
        new_ids = kept["event_id"].drop_nulls().to_numpy().astype(np.int64)
        self._write(stored, source, sha, entities, relations, stats, new_ids)
        log.info("ingest_done", **stats.as_dict())
        return stats

    def _keep_mask(self, batch: pl.DataFrame) -> pl.Series:
        """True for rows to store: first occurrence of an event id not yet in the store.

        A batch without repeated ids (the usual case) is told apart by counting distinct ids,
        far cheaper than marking first occurrences.
        """
        event_ids = batch["event_id"]
        has_id = event_ids.is_not_null().to_numpy()
        if event_ids.n_unique() == event_ids.len():
            first = np.ones(event_ids.len(), dtype=bool)
        else:
            first = (event_ids.is_first_distinct() | event_ids.is_null()).to_numpy()
        seen = self._seen_ids()
        if seen.size == 0:
            return pl.Series("keep", first)
        values = event_ids.fill_null(0).to_numpy()
        pos = np.searchsorted(seen, values).clip(max=seen.size - 1)
        in_store = has_id & (seen[pos] == values)
        return pl.Series("keep", first & ~in_store)

    def _write(
        self,
        stored: pl.DataFrame,
        source: str,
        sha: str,
        entities: Vocabulary,
        relations: Vocabulary,
        stats: IngestStats,
        new_ids: np.ndarray,
    ) -> None:
        """The write sequence; the commit-log line is last, so any earlier crash is undone."""
        part = sha[:_PART_ID_CHARS]
        groups = {key[0]: frame for key, frame in stored.partition_by("t", as_dict=True).items()}
        steps = sorted(groups)
        _write_json(
            self._pending_path, {"source": source, "sha256": sha, "part": part, "steps": steps}
        )
        for t in steps:
            self._write_part(t, part, groups[t])
        entities.save(self.root / "entities.tsv")
        relations.save(self.root / "relations.tsv")
        (self.root / "stats").mkdir(exist_ok=True)
        _write_json(self.root / "stats" / f"{part}.json", stats.as_dict())
        _append_bytes(self._event_ids_path, new_ids.astype("<i8").tobytes())
        commit = {
            "source": source,
            "sha256": sha,
            "part": part,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "steps": steps,
            "num_entities": len(entities),
            "num_relations": len(relations),
            "num_event_ids": self._state.num_event_ids + new_ids.size,
            "stats": stats.as_dict(),
        }
        _append_bytes(self._log_path, (json.dumps(commit) + "\n").encode("utf-8"))
        self._pending_path.unlink()
        self._apply_commit(commit, entities, relations, new_ids)

    def _write_part(self, t: int, part: str, frame: pl.DataFrame) -> None:
        """One parquet file per (step, ingest), written atomically."""
        step_dir = self._step_dir(t)
        if not step_dir.exists():
            step_dir.mkdir(parents=True)
            fsync_dir(step_dir.parent)
        atomic_write(self._part_path(t, part), frame.write_parquet)

    def _apply_commit(
        self,
        commit: dict[str, Any],
        entities: Vocabulary,
        relations: Vocabulary,
        new_ids: np.ndarray,
    ) -> None:
        """Advance the in-memory state to match what was just committed."""
        state = self._state
        state.shas.add(commit["sha256"])
        for t in commit["steps"]:
            state.parts_by_step.setdefault(t, []).append(commit["part"])
        state.entities, state.relations = entities, relations
        state.num_event_ids = commit["num_event_ids"]
        state.committed_bytes = state.log_size = self._log_path.stat().st_size
        if self._seen is not None:
            added = _sorted_ids(new_ids)
            self._seen = np.insert(self._seen, np.searchsorted(self._seen, added), added)

    # ----------------------------------------------------------------- read side

    @property
    def entities(self) -> Vocabulary:
        """Committed entity vocabulary (treat as read-only; the store never mutates it)."""
        self.refresh()
        return self._state.entities

    @property
    def relations(self) -> Vocabulary:
        """Committed relation vocabulary (treat as read-only; the store never mutates it)."""
        self.refresh()
        return self._state.relations

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def steps(self) -> list[int]:
        """Sorted time steps holding at least one committed row."""
        self.refresh()
        return sorted(self._state.parts_by_step)

    def _files(self, t_min: int | None, t_max: int | None) -> list[Path]:
        """Committed part files in step order, then ingest order."""
        by_step = self._state.parts_by_step
        return [
            self._part_path(t, part)
            for t in sorted(by_step)
            if (t_min is None or t >= t_min) and (t_max is None or t <= t_max)
            for part in by_step[t]
        ]

    def scan(
        self, split: str | None = None, t_min: int | None = None, t_max: int | None = None
    ) -> pl.DataFrame:
        """Committed rows (ids, ``STORED_SCHEMA``) with ``t_min <= t <= t_max``, in step order."""
        return self.scan_lazy(split, t_min, t_max).collect()

    def scan_lazy(
        self, split: str | None = None, t_min: int | None = None, t_max: int | None = None
    ) -> pl.LazyFrame:
        """``scan`` before it is collected: only the parts of steps in ``t_min..t_max`` are
        listed, and a caller's filters and column selection are pushed into the parquet read.

        Rows come in step order, then ingest order, then row order within an ingest. The file
        list is fixed when this is called; commits made later are not seen.
        """
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.refresh()
        files = self._files(t_min, t_max)
        if not files:
            return pl.LazyFrame(schema=STORED_SCHEMA)
        frame = pl.scan_parquet(
            files, schema=STORED_SCHEMA, missing_columns="insert", hive_partitioning=False
        )
        if split is not None:
            frame = frame.filter(pl.col("split") == split)
        return frame

    def snapshot(self, t: int) -> np.ndarray:
        """(n, 3) int64 array of (subject, relation, object) ids at step ``t``, one row per fact
        stored (repeats kept: several events may share a triple within a step)."""
        frame = self.scan(t_min=t, t_max=t)
        return frame.select(_KEY_COLUMNS).to_numpy().astype(np.int64).reshape(-1, 3)


# --------------------------------------------------------------------- batch helpers


def _validate_quads(quads: pl.DataFrame) -> pl.DataFrame:
    """Check the reader contract and return the batch in ``QUAD_SCHEMA`` order plus the
    ``OPTIONAL_SCHEMA`` columns (null where the batch lacks them).

    Everything is rejected here, before any write, so a bad batch never leaves partial state.
    """
    missing = [name for name in QUAD_SCHEMA if name not in quads.columns]
    unexpected = sorted(set(quads.columns) - set(QUAD_SCHEMA) - set(OPTIONAL_SCHEMA))
    if missing or unexpected:
        raise ValueError(
            f"quads columns: missing {missing}, unexpected {unexpected}; expected "
            f"{list(QUAD_SCHEMA)} and optionally {list(OPTIONAL_SCHEMA)}"
        )
    optional = [
        quads[name]
        if name in quads.columns
        else pl.repeat(None, quads.height, dtype=dtype, eager=True).alias(name)
        for name, dtype in OPTIONAL_SCHEMA.items()
    ]
    schema = {**QUAD_SCHEMA, **OPTIONAL_SCHEMA}
    columns = [*(quads[name] for name in QUAD_SCHEMA), *optional]
    batch = pl.DataFrame([_cast(column, schema[column.name]) for column in columns])
    for name in (*_KEY_COLUMNS, "t"):
        nulls = batch[name].null_count()
        if nulls:
            raise ValueError(f"quads column {name!r} has {nulls} nulls; the reader must drop them")
    negative = batch.filter(pl.col("t") < 0).height
    if negative:
        raise ValueError(f"quads column 't' has {negative} negative steps")
    splits = batch["split"].drop_nulls().unique()
    bad_splits = splits.filter(~splits.is_in(SPLITS)).to_list()
    if bad_splits:
        raise ValueError(f"quads column 'split' has values {bad_splits}; allowed {SPLITS}")
    return batch


def _cast(column: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Strict cast with a message naming the column; keys must already be strings."""
    if dtype == pl.String and column.dtype.is_numeric():
        raise ValueError(f"quads column {column.name!r} must hold string keys, got {column.dtype}")
    try:
        return column.cast(dtype, strict=True)
    except pl.exceptions.PolarsError as err:
        raise ValueError(
            f"quads column {column.name!r} ({column.dtype}) is not {dtype}: {err}"
        ) from None


def _distinct_entities(batch: pl.DataFrame) -> list[str]:
    """The batch's entity keys, each once (order irrelevant: for the OOV rate)."""
    return pl.concat([batch["subject"], batch["object"]]).unique().to_list()


def _register(vocab: Vocabulary, frame: pl.DataFrame, columns: Sequence[str]) -> None:
    """Add the keys of ``columns`` that ``vocab`` lacks, in row-major first appearance (s0, o0,
    s1, o1, ...). The distinct keys are checked first: when the labels registered every key
    already (the usual case) that order need not be worked out a second time."""
    distinct = pl.concat([frame[c] for c in columns]).unique().to_list()
    if any(key not in vocab for key in distinct):
        vocab.add(first_appearance(frame, columns))


def _encode(kept: pl.DataFrame, entities: Vocabulary, relations: Vocabulary) -> pl.DataFrame:
    """Replace keys by ids (extending the vocabularies) and lay out as ``STORED_SCHEMA``."""
    _register(entities, kept, ("subject", "object"))
    _register(relations, kept, ("relation",))
    encoded = kept.with_columns(
        pl.Series("subject", entities.ids(kept["subject"]), dtype=pl.Int32),
        pl.Series("relation", relations.ids(kept["relation"]), dtype=pl.Int32),
        pl.Series("object", entities.ids(kept["object"]), dtype=pl.Int32),
    )
    return encoded.select(STORED_SCHEMA.names())


def _sorted_ids(ids: np.ndarray) -> np.ndarray:
    """Event ids sorted; GDELT hands them out ascending, and a stable sort (timsort) is linear on
    already sorted runs, ~100x faster than numpy's default introsort there."""
    return np.sort(ids, kind="stable")


def _top_relations(kept: pl.DataFrame) -> dict[str, int]:
    """The most frequent relation keys of the stored rows (ties broken by key)."""
    counts = kept.group_by("relation").len().sort(["len", "relation"], descending=[True, False])
    top = counts.head(TOP_RELATIONS)
    return dict(zip(top["relation"].to_list(), top["len"].to_list(), strict=True))


# --------------------------------------------------------------------- file helpers


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: unreadable JSON ({err})") from None


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    data = (json.dumps(payload, indent=2) + "\n").encode("utf-8")
    atomic_write_bytes(path, data)


def _append_bytes(path: Path, data: bytes) -> None:
    """Append and fsync; used for the two append-only logs (event ids, commits)."""
    created = not path.exists()
    with open(path, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if created:
        fsync_dir(path.parent)


def _truncate(path: Path, size: int) -> None:
    """Cut an append-only log back to its committed length; shorter than that is corruption."""
    actual = path.stat().st_size if path.exists() else 0
    if actual < size:
        raise StoreError(f"{path}: {actual} bytes but the commit log requires {size}")
    if actual > size:
        os.truncate(path, size)


def _read_commit_log(path: Path) -> tuple[list[dict[str, Any]], int, int]:
    """Complete commit lines, their byte length, and the file size.

    A final line without a newline is an interrupted commit and does not count.
    """
    if not path.exists():
        return [], 0, 0
    data = path.read_bytes()
    committed = data.rfind(b"\n") + 1
    commits = []
    for lineno, line in enumerate(data[:committed].splitlines(), start=1):
        try:
            commits.append(json.loads(line))
        except ValueError as err:
            raise StoreError(f"{path}:{lineno}: corrupt commit record ({err})") from None
    return commits, committed, len(data)


def step_start(t: int, step_minutes: int) -> datetime:
    """The UTC start of store step ``t``: steps count ``step_minutes`` from the Unix epoch, so
    ``step_start(t, m) <= event time < step_start(t + 1, m)`` for every fact of step ``t``."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(minutes=t * step_minutes)
