"""``geopol bench NAME``: run one benchmark (or ``all``) into reports/bench.json."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "transport": "shared.bench.transport",
    "ingest": "services.ingest.bench",
    "graph": "services.graph.bench",
    "llm": "services.llm.bench",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in {*BENCHES, "all"}:
        print(
            f"usage: geopol bench {{{','.join([*BENCHES, 'all'])}}} [options]\n"
            "Each benchmark writes its section of reports/bench.json and reports/bench.md; "
            "`geopol bench NAME --help` lists its options."
        )
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    names = list(BENCHES) if argv[0] == "all" else [argv[0]]
    rest = argv[1:] if argv[0] != "all" else []
    codes = [importlib.import_module(BENCHES[n]).main(rest) for n in names]
    return max(codes)
