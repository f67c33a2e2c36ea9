"""Ingest benchmark: rows per second through parse + map + store, beside ``pandas.read_csv``.

"Ours" is ``export_ingest.ingest_file`` on one large GDELT 2.0 export into a fresh event store:
content hash, typed read with every row check of every column (``read_export``, building only
the columns the mapping uses), mapping to quadruples (``to_quadruples``), vocabulary encoding
and parquet partitions with fsync (``EventStore.append``) - exactly what the live ingest does
per file. "pandas" is ``pandas.read_csv(sep="\\t",
header=None, dtype=str)`` of the same file: parsing only, no types, checks or writes. Both run in
the same invocation, alternating, best of N each, so the ratio compares like with like.

The input is made deterministically: real GDELT 2.0 rows (``gdelt/v2`` of the team data, or
``--data``) repeated to ``--rows`` with fresh consecutive GLOBALEVENTIDs, so no row is a duplicate
and every value is a real one. Without team data the template rows come from the seeded
simulator. One further instrumented run times the stages separately, to show where time goes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import polars as pl
import structlog

from services.ingest import gdelt_schema as gs
from services.ingest.export_ingest import ingest_file, read_hashed
from services.ingest.gdelt_reader import read_export, source_files
from services.ingest.mapping import MappingConfig, to_quadruples
from services.ingest.simulator import WorldParams, simulate
from shared.bench import machine, report
from shared.config import load_config
from shared.event_store import EventStore
from shared.log import configure_logging

log = structlog.get_logger(__name__)

COMMAND = "geopol bench ingest"
DEFAULT_ROWS = 500_000
DEFAULT_REPEATS = 3
TEAM_TEMPLATE = Path("gdelt") / "v2"
"""Real GDELT 2.0 exports under the team data folder (5,777 rows in three files)."""
BENCH_MAPPING = MappingConfig(
    entity_key="actor_code", relation_level="root", time_field="dateadded", step_minutes=15
)
"""The live pipeline's mapping (configs/default.yaml), fixed here so the figure stays comparable
when the config changes."""
FIRST_EVENT_ID = 1_000_000_000
_CHUNK_ROWS = 100_000  # rows per write while building the input, to bound memory
_SIM_STEPS, _SIM_EVENTS = 8, 500.0
_SIM_START = datetime(2024, 1, 1, tzinfo=UTC)

T = TypeVar("T")


@dataclass(frozen=True)
class BenchInput:
    """The file both sides read, and where its rows came from."""

    path: Path
    rows: int
    origin: str


def team_template_dir() -> Path:
    """``gdelt/v2`` in the team data: the default config's paths.data_dir (GEOPOL_DATA_DIR
    overrides it), else the team folder beside the clone."""
    return load_config().data_dir / TEAM_TEMPLATE


def template_rows(source: Path) -> list[bytes]:
    """The GDELT 2.0 rows (61 tab-separated fields) of every export under ``source``, without
    their GLOBALEVENTID; rows of other layouts are left out so the input is one layout."""
    rests: list[bytes] = []
    for path in source_files(source):
        for line in path.read_bytes().splitlines():
            if line.count(b"\t") == gs.V2_FIELDS - 1:
                rests.append(line.split(b"\t", 1)[1])
    if not rests:
        raise ValueError(f"{source}: no GDELT 2.0 export rows (61 tab-separated fields)")
    return rests


def simulated_rows(work_dir: Path) -> list[bytes]:
    """Template rows from a small seeded simulated world, for machines without team data."""
    out = work_dir / "simulated"
    simulate(out, WorldParams(seed=0, events_per_step=_SIM_EVENTS), _SIM_STEPS, _SIM_START)
    return template_rows(out)


def write_input(rests: list[bytes], rows: int, path: Path) -> Path:
    """``rows`` lines cycling through the template rows, GLOBALEVENTIDs counted up from
    ``FIRST_EVENT_ID``: the same bytes for the same template and row count."""
    with open(path, "wb") as handle:
        for start in range(0, rows, _CHUNK_ROWS):
            stop = min(rows, start + _CHUNK_ROWS)
            handle.write(
                b"".join(
                    b"%d\t%s\n" % (FIRST_EVENT_ID + i, rests[i % len(rests)])
                    for i in range(start, stop)
                )
            )
    return path


def build_input(work_dir: Path, rows: int, data: Path | None) -> BenchInput:
    """The benchmark export under ``work_dir``, from ``data``, the team data, or the simulator."""
    source = data or team_template_dir()
    if data is None and not source.exists():
        log.warning("bench_input_simulated", reason=f"{source} not found")
        rests, origin = simulated_rows(work_dir), "simulated GDELT 2.0 rows (seed 0)"
    else:
        rests = template_rows(source)
        origin = f"{len(rests):,} real GDELT 2.0 rows from {source.name}/"
    path = write_input(rests, rows, work_dir / "bench.export.CSV")
    return BenchInput(path, rows, f"{origin} repeated to {rows:,} rows, fresh GLOBALEVENTIDs")


def _timed(run: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def _fresh_store(root: Path) -> EventStore:
    """A new empty store; no disk floor, since a benchmark store is temporary."""
    shutil.rmtree(root, ignore_errors=True)
    return EventStore(root, step_minutes=BENCH_MAPPING.step_minutes, min_free_bytes=0)


def time_ours(bench: BenchInput, work_dir: Path) -> tuple[float, int]:
    """Seconds for one ``ingest_file`` into a fresh store, and the quadruples it stored."""
    store = _fresh_store(work_dir / "store")
    seconds, stats = _timed(
        lambda: ingest_file(bench.path, store, BENCH_MAPPING, work_dir / "quarantine")
    )
    if stats is None:
        raise RuntimeError(f"{bench.path.name}: a fresh store skipped it as already ingested")
    if stats.read_stats["rows_read"] != bench.rows:
        raise RuntimeError(f"ingest read {stats.read_stats['rows_read']} of {bench.rows} rows")
    return seconds, stats.kept


def time_pandas(bench: BenchInput) -> float:
    """Seconds for ``pandas.read_csv`` of the same file, every field as a string."""
    seconds, frame = _timed(lambda: pd.read_csv(bench.path, sep="\t", header=None, dtype=str))
    if frame.shape != (bench.rows, gs.V2_FIELDS):
        raise RuntimeError(f"pandas read {frame.shape}, expected ({bench.rows}, {gs.V2_FIELDS})")
    return seconds


def time_stages(bench: BenchInput, work_dir: Path) -> dict[str, float]:
    """One instrumented pass through the steps ``ingest_file`` takes, each timed on its own.

    ``sha256`` is reading the file and hashing it (the bytes are read once, for both the hash
    and the parse); ``read`` parses and checks them. The CAMEO labels ``ingest_file`` attaches
    are not built here; they are the difference between the end-to-end time and the sum of
    these stages.
    """
    store = _fresh_store(work_dir / "store")
    sha_s, (data, sha) = _timed(lambda: read_hashed(bench.path))
    read_s, read = _timed(
        lambda: read_export(bench.path, columns=BENCH_MAPPING.needed_columns, data=data)
    )
    map_s, mapped = _timed(lambda: to_quadruples(read.rows, BENCH_MAPPING))
    store_s, _ = _timed(
        lambda: store.append(mapped.quads, source=bench.path.name, source_sha256=sha)
    )
    return {"sha256": sha_s, "read": read_s, "map": map_s, "store": store_s}


def measure(bench: BenchInput, repeats: int, work_dir: Path) -> dict[str, Any]:
    """The ``ingest`` section but its ``command``: best of ``repeats`` alternating rounds each.

    ``threads`` is polars' thread pool (our side is multi-threaded, pandas' parser is not).
    """
    ours: list[float] = []
    theirs: list[float] = []
    quads = 0
    for round_no in range(repeats):
        theirs.append(time_pandas(bench))
        seconds, quads = time_ours(bench, work_dir)
        ours.append(seconds)
        log.info("ingest_bench_round", round=round_no, ours_s=seconds, pandas_s=theirs[-1])
    stages = time_stages(bench, work_dir)
    rows_per_s, pandas_rows_per_s = bench.rows / min(ours), bench.rows / min(theirs)
    return {
        "rows_per_s": round(rows_per_s, 1),
        "pandas_rows_per_s": round(pandas_rows_per_s, 1),
        "ratio": round(rows_per_s / pandas_rows_per_s, 3),
        "rows": bench.rows,
        "quadruples": quads,
        "file_mb": round(bench.path.stat().st_size / 2**20, 1),
        "input": bench.origin,
        "repeats": repeats,
        "seconds": {"ours": round(min(ours), 4), "pandas": round(min(theirs), 4)},
        "stages_s": {name: round(value, 4) for name, value in stages.items()},
        "threads": pl.thread_pool_size(),
    }


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (``--reports`` aside)."""
    data = f" --data {args.data}" if args.data is not None else ""
    return f"{COMMAND} --rows {args.rows} --repeats {args.repeats}{data}"


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rates, stages) = plt.subplots(1, 2, figsize=(9, 3.2))
    labels = ["geopol\nparse+map+store", "pandas.read_csv\nparse only"]
    values = [result["rows_per_s"], result["pandas_rows_per_s"]]
    rates.bar(labels, [v / 1e3 for v in values], color=["tab:blue", "tab:gray"])
    rates.set_ylabel("thousand rows / s")
    rates.set_title(f"{result['rows']:,} rows, ratio {result['ratio']:.2f}x")
    left = 0.0
    for name, seconds in result["stages_s"].items():
        stages.barh([0], [seconds], left=left, label=name)
        left += seconds
    stages.set_yticks([])
    stages.set_xlabel("seconds (one instrumented run)")
    stages.set_title("where geopol's time goes")
    stages.legend(loc="upper center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.3))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(result: dict[str, Any], host: dict[str, Any]) -> str:
    stages = ", ".join(f"{name} {s:.2f} s" for name, s in result["stages_s"].items())
    per_min = {k: result[k] * 60 / 1e6 for k in ("rows_per_s", "pandas_rows_per_s")}
    return (
        "## ingest\n\n"
        f"Reproduce: `make bench` (every benchmark) or `{result['command']}`. "
        f"Machine: {host['cpu']}, {host['cores']} cores ({result['threads']} polars threads).\n"
        f"Input: one {result['file_mb']} MB GDELT 2.0 export, {result['input']}. "
        f"Best of {result['repeats']} alternating rounds each; targets: ratio ≥ 3 and "
        "≥ 1M rows per minute on 2 cores.\n\n"
        "| | rows/s | M rows/min |\n|---|---|---|\n"
        f"| geopol: read_export + to_quadruples + EventStore.append "
        f"({result['quadruples']:,} quadruples stored) | {result['rows_per_s']:,.0f} | "
        f"{per_min['rows_per_s']:.2f} |\n"
        f'| pandas.read_csv(sep="\\t", header=None, dtype=str) | '
        f"{result['pandas_rows_per_s']:,.0f} | {per_min['pandas_rows_per_s']:.2f} |\n"
        f"| ratio | {result['ratio']:.2f} | |\n\n"
        f"Stages of one instrumented run: {stages}.\n\n![ingest](ingest.png)"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=_positive,
        default=DEFAULT_ROWS,
        help=f"rows in the benchmark export (default: {DEFAULT_ROWS:,})",
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=DEFAULT_REPEATS,
        help=f"alternating rounds per side, best kept (default: {DEFAULT_REPEATS})",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"GDELT 2.0 export file or folder whose rows are repeated (default: "
        f"$GEOPOL_DATA_DIR/{TEAM_TEMPLATE}, else ../shared/data/{TEAM_TEMPLATE}, else the "
        f"simulator)",
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=report.REPORTS_DIR,
        help="folder for bench.json, bench.md and figures (default: reports)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the ``ingest`` section; 2 when ``--data`` is unusable."""
    args = _parser().parse_args(argv)
    configure_logging("bench", "warning")
    if args.data is not None and not args.data.exists():
        print(f"{COMMAND}: --data not found: {args.data}", file=sys.stderr)
        return 2
    host = machine.record(args.reports)
    with tempfile.TemporaryDirectory(prefix="geopol-bench-ingest-") as tmp:
        work_dir = Path(tmp)
        try:
            bench = build_input(work_dir, args.rows, args.data)
        except ValueError as err:
            print(f"{COMMAND}: {err}", file=sys.stderr)
            return 2
        result = {**measure(bench, args.repeats, work_dir), "command": _command(args)}
    path = report.write_section("ingest", result, _markdown(result, host), args.reports)
    _plot(result, args.reports / "ingest.png")
    print(
        f"ingest: {result['rows_per_s']:,.0f} rows/s, pandas.read_csv "
        f"{result['pandas_rows_per_s']:,.0f} rows/s, ratio {result['ratio']:.2f} "
        f"({result['rows']:,} rows, stages {result['stages_s']})"
    )
    print(f"wrote {path}")
    return 0
