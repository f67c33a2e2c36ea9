"""``geopol ingest``: load GDELT exports (files or folders) into the configured event store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.ingest.export_ingest import ingest_paths
from services.ingest.mapping import MappingConfig
from shared.config import DEFAULT_CONFIG, load_config
from shared.event_store import EventStore
from shared.file_quarantine import FileQuarantine
from shared.log import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol ingest",
        description="Read GDELT 1.0/2.0 exports (.CSV, .CSV.zip, BigQuery CSV; a file or a "
        "folder) and append their quadruples to the event store of the config's dataset. "
        "Bad rows are quarantined with their reason under RUN_DIR/quarantine/DATASET/, and a "
        "file that cannot be read at all (a truncated .zip, a .csv that is no GDELT export) "
        "under its files/ folder, skipped until it changes; files already ingested are skipped.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="pipeline config YAML (default: configs/default.yaml)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        action="append",
        help="export file or folder; repeatable (default: ingest.source)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = load_config(args.config)
    configure_logging("ingest", config.logging.level, config.logging.format)
    sources = args.source or ([config.ingest.source] if config.ingest.source else [])
    missing = [s for s in sources if not s.exists()]
    if not sources or missing:
        what = f"not found: {', '.join(map(str, missing))}" if missing else "no source given"
        print(
            f"geopol ingest: {what} (use --source or ingest.source in {args.config})",
            file=sys.stderr,
        )
        return 2
    mapping = MappingConfig(**config.ingest.mapping.model_dump())
    store = EventStore(
        config.store_dir,
        step_minutes=mapping.step_minutes,
        min_free_bytes=config.ingest.min_free_mb << 20,
    )
    stats = ingest_paths(
        sources,
        store,
        mapping,
        config.quarantine_dir,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    kept = sum(s.kept for s in stats)
    print(
        f"ingested {len(stats)} new file(s), {kept} quadruples; store {config.store_dir}: "
        f"{store.num_entities} entities, {store.num_relations} relations, "
        f"{len(store.steps())} time steps"
    )
    quarantine = FileQuarantine(config.quarantine_dir)
    if held := quarantine.count():
        print(f"{held} unreadable file(s) quarantined; why: {quarantine.directory}/NAME.json")
    # A file named on the command line that cannot be read is bad input; files found in a
    # folder are quarantined and the rest ingested, as the stage does.
    for source in sources:
        if source.is_file() and (reason := quarantine.reason(source)) is not None:
            print(f"geopol ingest: {source}: quarantined, not ingested: {reason}", file=sys.stderr)
            return 2
    return 0
