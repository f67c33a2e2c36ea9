"""``geopol serve STAGE``: run one stage in the foreground (for debugging one stage at a time)."""

from __future__ import annotations

import importlib
import sys

from shared.pipeline import SERVICES


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in SERVICES:
        print(
            f"usage: geopol serve {{{','.join(SERVICES)}}} [--config FILE]\n"
            "Runs the stage in this terminal; Ctrl-C or SIGTERM stops it gracefully.",
            file=sys.stderr,
        )
        return 2
    return int(importlib.import_module(SERVICES[argv[0]]).main(argv[1:]))
