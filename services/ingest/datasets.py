"""Benchmark datasets built from real GDELT through the ordinary ingest path.

``GDELT-GEORGIA``: twelve months (June 2011 - May 2012) of GDELT 1.0 events about Georgia
(``gdelt/v1/undp_georgia_bigquery_csv`` in the team data), written in the RE-Net / RE-GCN layout
so the graph models and the published baselines read it like ICEWS14.

Why through the ordinary path (``read_export`` -> ``to_quadruples`` -> ``EventStore``) and not a
one-off script: the benchmark then measures the same quadruples the live pipeline produces, with
the reader's quarantine, the mapping's filters and the store's cross-file event-id dedupe.

Choices, all recorded in ``dataset.json``:

* ``t`` is the time-step index counted from the first step holding a fact (with the default
  mapping: the day, 0 = 2011-06-01). Days without facts keep their index, so gaps stay gaps.
* Identical ``(s, r, o, t)`` facts are kept once, as in the TKG benchmarks: GDELT codes one
  happening reported by several outlets as several events, and a repeated fact within one day
  would only weight the ranking metrics towards frequently reported facts.
* Splits are chronological by whole time steps over the calendar span (empty days included):
  the last ``test_frac`` of the steps is test, the ``valid_frac`` before it valid, the rest train
  (default 80/10/10 by time, as RE-GCN's datasets), so no test day is seen during training.
* Entity and relation ids are the keys in sorted order (CAMEO actor codes, CAMEO root codes
  ``01``..``20`` -> 0..19), so ids depend neither on file order nor on the store's history.
* Within a split, lines are sorted by ``t, s, r, o``: the build is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import structlog

from services.ingest import cameo
from services.ingest.export_ingest import ingest_file
from services.ingest.gdelt_reader import source_files
from services.ingest.mapping import MINUTES_PER_DAY, MappingConfig, step_start
from shared.config import DEFAULT_CONFIG, load_config
from shared.event_store import SPLITS, EventStore, IngestStats
from shared.log import configure_logging
from shared.tkg_dataset import SPLIT_FILES

log = structlog.get_logger(__name__)

GEORGIA_NAME = "GDELT-GEORGIA"
GEORGIA_SOURCE = Path("gdelt") / "v1" / "undp_georgia_bigquery_csv"
"""Where the Georgia extract lies under the team data folder."""
GEORGIA_MAPPING = MappingConfig(
    entity_key="actor_code", relation_level="root", time_field="sqldate", step_minutes=1440
)
DEFAULT_VALID_FRAC = 0.1
DEFAULT_TEST_FRAC = 0.1
DATASETS_SUBDIR = "datasets"
"""Builds go to RUN_DIR/datasets/NAME by default, named after the dataset so ``load_tkg``
reports ``GDELT-GEORGIA`` as its name; ``GEOPOL_RUN_DIR`` moves them with the run directory."""

STORE_DIR = "store"
QUARANTINE_DIR = "quarantine"
OUTPUT_FILES = (
    *SPLIT_FILES.values(),
    "entity2id.txt",
    "relation2id.txt",
    "stat.txt",
    "dataset.json",
)
"""Every file the build writes beside ``store/`` (and ``quarantine/`` when rows were bad)."""
_KEYS = ("subject", "relation", "object")
FROM_STORE = "from-store"


class DatasetError(RuntimeError):
    """The dataset cannot be built from what was given; the message says what to change."""


@dataclass(frozen=True)
class SplitSpan:
    """One split: its first and last time step (inclusive) and how many facts it holds."""

    first_t: int
    last_t: int
    facts: int


@dataclass(frozen=True)
class DatasetSummary:
    """What a build produced; ``dataset.json`` holds the same and more (per-file provenance)."""

    name: str
    out_dir: Path
    num_entities: int
    num_relations: int
    num_steps: int
    """Time steps from the first to the last fact, empty ones included."""
    first_day: date
    splits: Mapping[str, SplitSpan]
    events_stored: int
    """Events the store kept (one quadruple each) before identical facts were merged."""
    duplicate_facts: int
    """Facts dropped because the same ``(s, r, o, t)`` was already there."""

    @property
    def num_facts(self) -> int:
        return sum(span.facts for span in self.splits.values())


def build_gdelt_georgia(
    source_dir: Path,
    out_dir: Path,
    *,
    mapping: MappingConfig = GEORGIA_MAPPING,
    valid_frac: float = DEFAULT_VALID_FRAC,
    test_frac: float = DEFAULT_TEST_FRAC,
    overwrite: bool = False,
) -> DatasetSummary:
    """Build GDELT-GEORGIA from the export files in ``source_dir`` into ``out_dir``.

    ``out_dir`` must not hold an earlier build unless ``overwrite`` (the store inside would skip
    files it already holds and could mix two mappings). Raises ``DatasetError`` when the source
    holds no export file or no fact survives, ``ValueError`` on impossible split fractions.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    _check_fracs(valid_frac, test_frac)
    files = source_files(source_dir) if source_dir.is_dir() else []
    if not files:
        raise DatasetError(f"{source_dir}: no GDELT export files (.csv/.tsv/.zip) found")
    _prepare_out_dir(out_dir, overwrite)
    store = EventStore(out_dir / STORE_DIR, step_minutes=mapping.step_minutes)
    ingested = [_ingest_new(path, store, mapping, out_dir / QUARANTINE_DIR) for path in files]
    stored = _stored_facts(store)
    if stored.is_empty():
        raise DatasetError(f"{source_dir}: no row became a quadruple under {mapping}")
    facts = stored.unique(subset=[*_KEYS, "t"], maintain_order=True)
    first_t = int(facts["t"].min())
    facts = facts.with_columns(pl.col("t") - first_t)
    num_steps = int(facts["t"].max()) + 1
    bounds = split_bounds(num_steps, valid_frac, test_frac)
    entities = _sorted_keys(facts, ("subject", "object"))
    relations = _sorted_keys(facts, ("relation",))
    spans = write_splits(out_dir, _encode(facts, entities, relations), bounds)
    write_names(out_dir / "entity2id.txt", entities)
    write_names(out_dir / "relation2id.txt", relations)
    write_text(out_dir / "stat.txt", f"{len(entities)}\t{len(relations)}\n")
    summary = DatasetSummary(
        name=GEORGIA_NAME,
        out_dir=out_dir,
        num_entities=len(entities),
        num_relations=len(relations),
        num_steps=num_steps,
        first_day=step_start(first_t, mapping.step_minutes).date(),
        splits=spans,
        events_stored=stored.height,
        duplicate_facts=stored.height - facts.height,
    )
    manifest = _manifest(summary, source_dir, ingested, mapping, relations, valid_frac, test_frac)
    write_text(out_dir / "dataset.json", json.dumps(manifest, indent=2) + "\n")
    log.info(
        "dataset_built",
        name=summary.name,
        out_dir=str(out_dir),
        entities=summary.num_entities,
        relations=summary.num_relations,
        facts={split: span.facts for split, span in spans.items()},
        duplicate_facts=summary.duplicate_facts,
    )
    return summary


def split_bounds(num_steps: int, valid_frac: float, test_frac: float) -> dict[str, range]:
    """Steps ``0..num_steps-1`` cut chronologically into train, valid and test ranges.

    Valid and test get ``round(frac * num_steps)`` steps each (at least one), train the rest,
    which must be at least one step too.
    """
    _check_fracs(valid_frac, test_frac)
    n_test = max(1, int(test_frac * num_steps + 0.5))
    n_valid = max(1, int(valid_frac * num_steps + 0.5))
    n_train = num_steps - n_valid - n_test
    if n_train < 1:
        raise DatasetError(
            f"{num_steps} time steps cannot give train, valid ({n_valid}) and test ({n_test}) "
            f"at least one step each; use smaller fractions or more data"
        )
    return {
        "train": range(0, n_train),
        "valid": range(n_train, n_train + n_valid),
        "test": range(n_train + n_valid, num_steps),
    }


def _check_fracs(valid_frac: float, test_frac: float) -> None:
    if not (0 < valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError(
            f"valid_frac and test_frac must be in (0, 1) with a sum below 1, "
            f"got {valid_frac} and {test_frac}"
        )


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an earlier build unless ``overwrite``; then remove only what a build writes."""
    earlier = [out_dir / name for name in (STORE_DIR, QUARANTINE_DIR, *OUTPUT_FILES)]
    present = [path for path in earlier if path.exists()]
    if present and not overwrite:
        raise DatasetError(
            f"{out_dir} already holds a build ({present[0].name}, ...); pass overwrite=True "
            f"(--overwrite) to rebuild it"
        )
    for path in present:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _ingest_new(
    path: Path, store: EventStore, mapping: MappingConfig, quarantine_dir: Path
) -> IngestStats:
    """One file through the live ingest path; the store is fresh, so nothing may be skipped."""
    stats = ingest_file(path, store, mapping, quarantine_dir)
    if stats is None:
        raise DatasetError(
            f"{path}: its content was already ingested from another file in the source folder; "
            f"remove the copy"
        )
    return stats


def _stored_facts(store: EventStore) -> pl.DataFrame:
    """Every stored quadruple with string keys (``subject relation object t``), in step order."""
    rows = store.scan()
    entities = pl.Series(store.entities.keys(), dtype=pl.String)
    relations = pl.Series(store.relations.keys(), dtype=pl.String)
    return pl.DataFrame(
        {
            "subject": entities.gather(rows["subject"]),
            "relation": relations.gather(rows["relation"]),
            "object": entities.gather(rows["object"]),
            "t": rows["t"],
        }
    )


def _sorted_keys(facts: pl.DataFrame, columns: Sequence[str]) -> list[str]:
    return sorted(set(pl.concat([facts[c] for c in columns]).to_list()))


def _encode(facts: pl.DataFrame, entities: list[str], relations: list[str]) -> pl.DataFrame:
    """Keys -> ids (position in the sorted key lists); rows sorted by ``t, s, r, o``."""
    entity_ids = {key: i for i, key in enumerate(entities)}
    relation_ids = {key: i for i, key in enumerate(relations)}
    return facts.select(
        pl.col("subject").replace_strict(entity_ids, return_dtype=pl.Int64).alias("s"),
        pl.col("relation").replace_strict(relation_ids, return_dtype=pl.Int64).alias("r"),
        pl.col("object").replace_strict(entity_ids, return_dtype=pl.Int64).alias("o"),
        pl.col("t").cast(pl.Int64),
    ).sort("t", "s", "r", "o")


def write_splits(
    out_dir: Path, encoded: pl.DataFrame, bounds: Mapping[str, range]
) -> dict[str, SplitSpan]:
    """``s<TAB>r<TAB>o<TAB>t`` lines per split; a split without facts is an error."""
    spans: dict[str, SplitSpan] = {}
    for split in SPLITS:
        steps = bounds[split]
        part = encoded.filter(pl.col("t").is_between(steps.start, steps.stop - 1))
        if part.is_empty():
            raise DatasetError(
                f"the {split} split (steps {steps.start}..{steps.stop - 1}) holds no fact; "
                f"change valid_frac/test_frac"
            )
        write_text(out_dir / SPLIT_FILES[split], _quad_lines(part))
        spans[split] = SplitSpan(steps.start, steps.stop - 1, part.height)
    return spans


def _quad_lines(part: pl.DataFrame) -> str:
    return part.write_csv(separator="\t", include_header=False, line_terminator="\n")


def write_names(path: Path, names: Sequence[str]) -> None:
    write_text(path, "".join(f"{name}\t{i}\n" for i, name in enumerate(names)))


def write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so a crash never leaves half a benchmark file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)


def _manifest(
    summary: DatasetSummary,
    source_dir: Path,
    ingested: Sequence[IngestStats],
    mapping: MappingConfig,
    relations: Sequence[str],
    valid_frac: float,
    test_frac: float,
) -> dict[str, Any]:
    """The provenance record; holds no clock time or absolute path, so rebuilds are identical."""
    step = timedelta(minutes=mapping.step_minutes)
    read_totals: Counter[str] = Counter()
    for stats in ingested:
        read_totals.update(stats.read_stats)
    return {
        "name": summary.name,
        "format": "RE-Net/RE-GCN: {train,valid,test}.txt lines 's<TAB>r<TAB>o<TAB>t'; "
        "entity2id.txt / relation2id.txt lines 'key<TAB>id'; stat.txt "
        "'num_entities<TAB>num_relations'",
        "source": {
            "folder": source_dir.name,
            "files": [_source_record(stats) for stats in ingested],
        },
        "mapping": dataclasses.asdict(mapping),
        "time": {
            "t": "time-step index from the first step holding a fact; empty steps keep their index",
            "step_minutes": mapping.step_minutes,
            "unit": "day" if mapping.step_minutes == MINUTES_PER_DAY else "step",
            "t0": summary.first_day.isoformat(),
            "num_steps": summary.num_steps,
        },
        "ids": "entities and relations numbered 0.. in sorted key order",
        "dedupe": "identical (s, r, o, t) facts kept once; an event whose GLOBALEVENTID an "
        "earlier file (in name order) already holds is dropped by the store",
        "counts": {
            "rows_read": read_totals["rows_read"],
            "rows_dropped": {k: v for k, v in sorted(read_totals.items()) if k != "rows_read"},
            "duplicate_events": sum(s.duplicates_dropped for s in ingested),
            "events_stored": summary.events_stored,
            "duplicate_facts": summary.duplicate_facts,
            "facts": summary.num_facts,
            "num_entities": summary.num_entities,
            "num_relations": summary.num_relations,
        },
        "split": {
            "rule": "chronological by whole time steps over the calendar span: the last "
            "round(test_frac * num_steps) steps are test, the round(valid_frac * num_steps) "
            "before them valid, the rest train",
            "valid_frac": valid_frac,
            "test_frac": test_frac,
            **{
                name: _span_record(span, summary.first_day, step)
                for name, span in summary.splits.items()
            },
        },
        "relation_labels": {code: cameo.relation_label(code) for code in relations},
    }


def _source_record(stats: IngestStats) -> dict[str, Any]:
    return {
        "file": stats.source,
        "sha256": stats.source_sha256,
        "rows_read": stats.read_stats["rows_read"],
        "quadruples_stored": stats.kept,
    }


def _span_record(span: SplitSpan, first_day: date, step: timedelta) -> dict[str, Any]:
    """Boundaries as step indices and as the first and last calendar day they cover."""
    last_day = first_day + step * (span.last_t + 1) - timedelta(days=1)
    return {
        "first_t": span.first_t,
        "last_t": span.last_t,
        "first_day": (first_day + step * span.first_t).isoformat(),
        "last_day": last_day.isoformat(),
        "facts": span.facts,
    }


# --------------------------------------------------------------------- command line


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol dataset",
        description="Build temporal-graph benchmark datasets from real GDELT, in the "
        "RE-Net/RE-GCN layout (train/valid/test.txt, entity2id.txt, relation2id.txt, "
        "stat.txt) with a dataset.json recording sources, mapping and splits.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="pipeline config giving RUN_DIR (paths.run_dir), the team data (paths.data_dir) "
        "and the logging settings (default: configs/default.yaml)",
    )
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    sub.add_parser(
        FROM_STORE,
        help="the config's event store as a benchmark folder, with the store's ids "
        "(`geopol dataset from-store --help`)",
        add_help=False,
    )
    georgia = sub.add_parser(
        "gdelt-georgia",
        help="12 months of GDELT 1.0 events about Georgia (June 2011 - May 2012)",
        description=f"Build {GEORGIA_NAME}: CAMEO actor codes as entities, the 20 CAMEO root "
        "codes as relations, one step per day, identical facts within a day kept once, "
        "chronological train/valid/test split by day.",
    )
    georgia.add_argument(
        "--source",
        type=Path,
        default=None,
        help=f"folder of the BigQuery CSV files (default: DATA_DIR/{GEORGIA_SOURCE}, DATA_DIR "
        "being paths.data_dir, else $GEOPOL_DATA_DIR, else ../shared/data beside the clone)",
    )
    georgia.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default: RUN_DIR/{DATASETS_SUBDIR}/{GEORGIA_NAME}, RUN_DIR being "
        "paths.run_dir or $GEOPOL_RUN_DIR)",
    )
    georgia.add_argument(
        "--valid-frac",
        type=_fraction,
        default=DEFAULT_VALID_FRAC,
        help=f"share of days for validation (default: {DEFAULT_VALID_FRAC})",
    )
    georgia.add_argument(
        "--test-frac",
        type=_fraction,
        default=DEFAULT_TEST_FRAC,
        help=f"share of days for test, the last ones (default: {DEFAULT_TEST_FRAC})",
    )
    georgia.add_argument("--overwrite", action="store_true", help="replace an earlier build")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``geopol dataset gdelt-georgia``; returns 2 on a usage or data problem, 0 when built.

    ``geopol dataset from-store`` has its own module and flags (``services.ingest.store_export``):
    it is handed over before parsing, and the parser lists it so ``geopol dataset --help`` shows
    every dataset."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [FROM_STORE]:
        from services.ingest import store_export  # it imports this module's writers

        return store_export.main(argv[1:])
    args = _parser().parse_args(argv)
    config = load_config(args.config)
    configure_logging("dataset", config.logging.level, config.logging.format)
    source = args.source or config.data_dir / GEORGIA_SOURCE
    if not source.is_dir():
        print(
            f"geopol dataset: source folder not found: {source}; "
            f"pass --source DIR, or set paths.data_dir (or GEOPOL_DATA_DIR) to the team data "
            f"folder (holding {GEORGIA_SOURCE})",
            file=sys.stderr,
        )
        return 2
    try:
        summary = build_gdelt_georgia(
            source,
            args.out or config.paths.run_dir / DATASETS_SUBDIR / GEORGIA_NAME,
            valid_frac=args.valid_frac,
            test_frac=args.test_frac,
            overwrite=args.overwrite,
        )
    except (DatasetError, ValueError) as err:
        print(f"geopol dataset: {err}", file=sys.stderr)
        return 2
    facts = ", ".join(
        f"{split} {span.facts} (t {span.first_t}..{span.last_t})"
        for split, span in summary.splits.items()
    )
    print(
        f"{summary.name} in {summary.out_dir}: {summary.num_entities} entities, "
        f"{summary.num_relations} relations, {summary.num_steps} days from "
        f"{summary.first_day}; facts: {facts}"
    )
    return 0
