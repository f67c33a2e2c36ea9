"""Load a temporal-KG benchmark folder (read by :mod:`shared.tkg_dataset`) into the event store.

Published results are reported against the original ids and splits, so ``ingest_tkg`` keeps both:
the store's vocabulary ids equal the benchmark ids and every row carries its split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import structlog

from shared.event_store import EventStore, KeyLabels
from shared.tkg_dataset import SPLIT_FILES, TkgDataset, TkgFormatError, display_name, load_tkg

log = structlog.get_logger(__name__)


def ingest_tkg(directory: Path, store_root: Path, *, time_unit: str | None = None) -> EventStore:
    """Load a benchmark into an EventStore, keeping its splits and its original ids.

    Entity and relation keys are registered in benchmark id order before any fact, so store id
    == benchmark id; this is verified and a store already holding other keys is refused.
    The store's ``t`` is the step index ``t // time_step`` (ICEWS14: day 1..365; the hourly nec
    variant: 0..364).
    """
    dataset = load_tkg(directory, time_unit=time_unit)
    store = EventStore(Path(store_root), step_minutes=dataset.step_minutes)
    _require_prefix(store, dataset, complete=False)
    labels = KeyLabels(
        entities={name: display_name(name) for name in dataset.entity_names},
        relations={name: display_name(name) for name in dataset.relation_names},
    )
    for split, facts in dataset.splits.items():
        store.append(
            _quad_frame(dataset, facts, split),
            source=f"{dataset.name}/{SPLIT_FILES[split]}",
            source_sha256=dataset.source_sha256[split],
            labels=labels,
        )
    _require_prefix(store, dataset, complete=True)
    log.info(
        "tkg_ingested",
        name=dataset.name,
        root=str(store_root),
        facts={split: len(facts) for split, facts in dataset.splits.items()},
    )
    return store


def _quad_frame(dataset: TkgDataset, facts: np.ndarray, split: str) -> pl.DataFrame:
    """The reader contract frame for one split (no event ids or GDELT attributes)."""
    times = facts[:, 3]
    misaligned = times % dataset.time_step != 0
    if misaligned.any():
        raise TkgFormatError(
            f"{dataset.directory}/{SPLIT_FILES[split]}: t={int(times[misaligned][0])} is not a "
            f"multiple of the time step {dataset.time_step}"
        )
    entities = pl.Series(dataset.entity_names, dtype=pl.String)
    relations = pl.Series(dataset.relation_names, dtype=pl.String)
    return pl.DataFrame(
        {
            "event_id": pl.Series([None] * len(facts), dtype=pl.Int64),
            "subject": entities.gather(facts[:, 0]),
            "relation": relations.gather(facts[:, 1]),
            "object": entities.gather(facts[:, 2]),
            "t": times // dataset.time_step,
            "goldstein": pl.Series([None] * len(facts), dtype=pl.Float64),
            "num_mentions": pl.Series([None] * len(facts), dtype=pl.Int64),
            "quad_class": pl.Series([None] * len(facts), dtype=pl.Int8),
            "split": [split] * len(facts),
        }
    )


def _require_prefix(store: EventStore, dataset: TkgDataset, *, complete: bool) -> None:
    """Store keys must be the benchmark names in id order (all of them once ingested)."""
    for what, stored, names in (
        ("entities", store.entities.keys(), dataset.entity_names),
        ("relations", store.relations.keys(), dataset.relation_names),
    ):
        expected = names if complete else names[: len(stored)]
        if stored != expected:
            raise TkgFormatError(
                f"{store.root}: {what} vocabulary ({len(stored)} keys) is not the id order of "
                f"{dataset.directory} ({len(names)} names); original ids would not be preserved"
            )
