"""``geopol bench NAME``: run one benchmark (or ``all``) into reports/bench.json."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from shared.bench import report

BENCHES = {
    "transport": "shared.bench.transport",
    "ingest": "services.ingest.bench",
    "graph": "services.graph.bench",
    "catchup": "services.graph.bench_catchup",
    "llm": "services.llm.bench",
}


def _all_parser() -> argparse.ArgumentParser:
    """``geopol bench all``: the one option every benchmark shares, so none is dropped
    silently; any other option is refused by name (it belongs to one benchmark)."""
    parser = argparse.ArgumentParser(
        prog="geopol bench all",
        description=f"Run every benchmark ({', '.join(BENCHES)}) in turn with its defaults; "
        "each writes its section of REPORTS/bench.json and bench.md. Options of one benchmark "
        "(--rows, --data, ...) go to it alone: `geopol bench NAME --help`.",
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=report.REPORTS_DIR,
        help="folder for bench.json, bench.md and figures, for every benchmark (default: reports)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in {*BENCHES, "all"}:
        print(
            f"usage: geopol bench {{{','.join([*BENCHES, 'all'])}}} [options]\n"
            "Each benchmark writes its section of reports/bench.json and reports/bench.md; "
            "`geopol bench NAME --help` lists its options."
        )
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    if argv[0] != "all":
        return importlib.import_module(BENCHES[argv[0]]).main(argv[1:])
    args = _all_parser().parse_args(argv[1:])  # --help prints and exits before anything runs
    shared = ["--reports", str(args.reports)]
    return max(importlib.import_module(BENCHES[name]).main(shared) for name in BENCHES)
