"""``geopol bench graph``: RE-GCN epoch time, jit compilations and peak memory on this machine.

Trains for a fixed number of epochs (default one) on a benchmark folder (default ICEWS14 from
the team data) and writes the ``graph`` section of reports/bench.json. This module imports no
JAX until ``jax_env.configure`` has run.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

from services.graph import jax_env
from services.graph.train import TrainRequest, has_static_graph, train_graph
from shared.bench import machine, report
from shared.config import load_config
from shared.log import configure_logging
from shared.tkg_dataset import load_tkg

COMMAND = "geopol bench graph"


def default_data() -> Path:
    """ICEWS14 in the team data: the default config's paths.data_dir (GEOPOL_DATA_DIR overrides
    it), else the team folder beside the clone."""
    return load_config().data_dir / "tkg" / "ICEWS14"


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    parser.add_argument("--data", type=Path, default=None, help="benchmark folder (ICEWS14)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs to time (default 1)")
    parser.add_argument("--reports", type=Path, default=report.REPORTS_DIR, help="reports folder")
    parser.add_argument("--mem-fraction", type=float, default=0.5, help="JAX memory share")
    args = parser.parse_args(argv)
    data = args.data or default_data()
    if not data.is_dir():
        print(f"{COMMAND}: {data} not found (use --data or GEOPOL_DATA_DIR)", file=sys.stderr)
        return 2
    jax_env.configure(args.mem_fraction)
    configure_logging("graph")
    dataset = load_tkg(data)
    static = has_static_graph(data)
    result = train_graph(
        TrainRequest(
            data=data,
            out=None,
            epochs=args.epochs,
            patience=args.epochs,
            static=static,
            progress=sys.stderr.isatty(),
        ),
        dataset,
    )
    epoch_s = sum(r["epoch_s"] for r in result.epochs) / len(result.epochs)
    section = {
        "dataset": dataset.name,
        "epoch_s": round(epoch_s, 2),
        "jit_compiles": int(sum(result.compiles.values())),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    host = machine.record(args.reports)
    markdown = (
        "## graph\n\n"
        f"Reproduce: `{COMMAND} --data {data.name} --epochs {args.epochs}` (`make bench`). "
        f"RE-GCN (dim 200, k=3, static graph {'on' if static else 'off'}) on {dataset.name}, "
        f"CPU: {host['cpu']}, {host['cores']} cores.\n\n"
        "| epoch s | jit compilations | peak RSS MB | valid MRR after the epochs |\n"
        "|---|---|---|---|\n"
        f"| {section['epoch_s']} | {section['jit_compiles']} | {section['peak_rss_mb']} | "
        f"{result.best_valid['filtered']['mrr']:.4f} |"
    )
    path = report.write_section("graph", section, markdown, args.reports)
    print(f"graph: {section} -> {path}")
    return 0
