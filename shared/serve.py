"""``geopol serve STAGE``: run one stage in the foreground (for debugging one stage at a time)."""

from __future__ import annotations

import argparse
import importlib
import sys

from shared.pipeline import services


def _parser() -> argparse.ArgumentParser:
    """Only the stage is parsed here; everything after it is the stage's own options, so
    ``geopol serve graph --help`` shows the graph stage's help."""
    parser = argparse.ArgumentParser(
        prog="geopol serve",
        description="Run one stage in this terminal; Ctrl-C or SIGTERM stops it gracefully. "
        "`geopol serve STAGE --help` lists the stage's options (--config FILE, ...).",
    )
    parser.add_argument("stage", choices=list(services()), help="the stage to run")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the stage's own options")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    return int(importlib.import_module(services()[args.stage]).main(args.options))
