"""Write an event store as a benchmark folder (RE-Net layout) that keeps the store's own ids.

The graph artifact trained on this folder then serves the live store directly: entity and
relation ids, and so the vocabulary hashes the graph stage checks, are the store's. Time steps
stay the store's step indices, so snapshots the ingest stage sends line up with training; the
folder's calendar.json says when each step starts, and entity2label.txt / relation2label.txt
give the display labels (store keys are codes such as CAMEO actor codes), so prompts built from
this folder show dates and names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

from services.ingest.datasets import (
    DEFAULT_TEST_FRAC,
    DEFAULT_VALID_FRAC,
    DatasetError,
    split_bounds,
    write_names,
    write_splits,
    write_text,
)
from services.ingest.mapping import step_start
from shared.calendar import CALENDAR_FILE, make_calendar
from shared.config import DEFAULT_CONFIG, load_config
from shared.event_store import EventStore
from shared.log import configure_logging
from shared.store_vocab import Vocabulary
from shared.tkg_dataset import LABEL_FILES


def export_store(
    store: EventStore,
    out_dir: Path,
    valid_frac: float = DEFAULT_VALID_FRAC,
    test_frac: float = DEFAULT_TEST_FRAC,
) -> dict[str, int]:
    """Write train/valid/test.txt (distinct (s, r, o, t) per step), entity2id, relation2id,
    entity2label, relation2label and calendar.json.

    Splits are chronological by step; returns the number of facts per split.
    """
    facts = (
        store.scan()
        .select(
            pl.col("subject").cast(pl.Int64).alias("s"),
            pl.col("relation").cast(pl.Int64).alias("r"),
            pl.col("object").cast(pl.Int64).alias("o"),
            pl.col("t").cast(pl.Int64),
        )
        .unique()
        .sort("t", "s", "r", "o")
    )
    if facts.is_empty():
        raise DatasetError(f"event store {store.root} holds no quadruple")
    steps = sorted(store.steps())
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = split_bounds(len(steps), valid_frac, test_frac)
    by_step = {split: range(steps[r.start], steps[r.stop - 1] + 1) for split, r in bounds.items()}
    spans = write_splits(out_dir, facts, by_step)
    write_names(out_dir / "entity2id.txt", store.entities.keys())
    write_names(out_dir / "relation2id.txt", store.relations.keys())
    write_names(out_dir / LABEL_FILES["entities"], display_labels(store.entities))
    write_names(out_dir / LABEL_FILES["relations"], display_labels(store.relations))
    calendar = make_calendar(step_start(0, store.step_minutes), store.step_minutes * 60)
    write_text(out_dir / CALENDAR_FILE, json.dumps(calendar, indent=2) + "\n")
    write_text(out_dir / "stat.txt", f"{store.num_entities}\t{store.num_relations}\n")
    return {split: span.facts for split, span in spans.items()}


def display_labels(vocabulary: Vocabulary) -> list[str]:
    """Per id, the key's human label, or the key itself where it has none."""
    return [vocabulary.label(key) or key for key in vocabulary.keys()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="geopol dataset from-store",
        description="Export the config's event store as a benchmark folder with the store's "
        "ids, to train the graph model that the pipeline's graph stage serves.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/datasets/DATASET)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    configure_logging("dataset", config.logging.level, config.logging.format)
    if not (config.store_dir / "store.json").exists():
        print(
            f"geopol dataset from-store: no event store at {config.store_dir} "
            "(run `make run` or `geopol ingest` first)",
            file=sys.stderr,
        )
        return 2
    store = EventStore(config.store_dir, step_minutes=config.ingest.mapping.step_minutes)
    out = args.out or config.dataset_dir
    try:
        counts = export_store(store, out)
    except DatasetError as err:
        print(f"geopol dataset from-store: {err}", file=sys.stderr)
        return 2
    print(
        f"{config.ingest.dataset} -> {out}: {store.num_entities} entities, "
        f"{store.num_relations} relations, facts {counts}"
    )
    return 0
