"""``geopol ingest tkg``: load a temporal-KG benchmark folder (ICEWS14 and the like) into an
event store with its own ids and splits (services/ingest/tkg_ingest.py).

What for: the prompts of a ``facts`` recipe read a question's recent facts from an event store
(services/llm/prompt_facts.py, ``llm.facts_store``), the same retrieval a forecast's evidence
uses; a benchmark loaded this way has store ids equal to the ids its embedding exports carry.
Loading a folder again into the same store adds nothing (each split is one source, ingested
once).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.ingest.tkg_ingest import ingest_tkg
from shared.config import DEFAULT_CONFIG, load_config
from shared.event_store import StoreError
from shared.log import configure_logging
from shared.tkg_dataset import TkgFormatError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol ingest tkg",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="for logging")
    parser.add_argument("--data", type=Path, required=True, help="benchmark folder (RE-Net)")
    parser.add_argument("--store", type=Path, required=True, help="event store folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = load_config(args.config)
    configure_logging("ingest", config.logging.level, config.logging.format)
    try:
        store = ingest_tkg(args.data, args.store)
    except (TkgFormatError, StoreError, ValueError, OSError) as exc:
        print(f"geopol ingest tkg: {exc}", file=sys.stderr)
        return 2
    print(f"{args.data} -> {args.store}: {store.num_entities} entities, "
          f"{store.num_relations} relations, steps {store.steps()[0]}..{store.steps()[-1]}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
