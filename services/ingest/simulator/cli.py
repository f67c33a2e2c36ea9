"""``geopol simulate``: write a seeded synthetic GDELT 2.0 feed plus its exact ground truth.

Why: the embedded default has no network and no team data; this gives it a feed with learnable
structure (recurring dyads, reciprocity, escalation, new actors) and the true next-step object
distributions that the calibration stage is checked against. Same seed and options, same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import structlog
from tqdm import tqdm

from services.ingest.simulator.export_writer import (
    COUNTRIES,
    FIRST_GLOBALEVENTID,
    SLOT,
    format_rows,
    load_codebook,
    slot_stamp,
    slot_time,
    write_export,
)
from services.ingest.simulator.truth import (
    TRUTH_DIR,
    WORLD_MANIFEST,
    manifest,
    truth_frame,
    write_manifest,
    write_truth,
)
from services.ingest.simulator.world import ROLE_WEIGHTS, World, WorldParams
from shared.config import DEFAULT_CONFIG, load_config
from shared.log import configure_logging

log = structlog.get_logger(__name__)

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
OUT_SUBDIR = "simulate"
"""The default output folder, under the config's run directory (``GEOPOL_RUN_DIR`` moves it)."""
MAX_ACTORS = len(COUNTRIES) * len(ROLE_WEIGHTS)
"""Distinct (country, role) actor codes available; births stop when all are used."""
_OUTPUT_GLOBS = ("*.export.CSV", "*.export.CSV.zip", f"{TRUTH_DIR}/*.parquet", WORLD_MANIFEST)


@dataclass(frozen=True)
class SimulationSummary:
    """What a run wrote, for the caller's log line and for tests."""

    out_dir: Path
    steps: int
    events: int
    actors_start: int
    actors_end: int
    seconds: float


def parse_start(text: str) -> datetime:
    """A UTC slot start from ISO 8601 or ``YYYYMMDDHHMMSS``; must fall on a 15-minute boundary."""
    try:
        moment = (
            datetime.strptime(text, "%Y%m%d%H%M%S")
            if text.isdigit()
            else datetime.fromisoformat(text)
        )
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date/time: {text!r}") from exc
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment.minute % 15 or moment.second or moment.microsecond:
        raise argparse.ArgumentTypeError(f"{text!r} is not on a 15-minute GDELT slot boundary")
    return moment


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Create the folder; refuse to mix runs unless ``overwrite``, which clears only our files."""
    existing = [p for pattern in _OUTPUT_GLOBS for p in sorted(out_dir.glob(pattern))]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a simulation ({existing[0].name}); "
            "pass --overwrite or choose another --out"
        )
    for path in existing:
        path.unlink()
    (out_dir / TRUTH_DIR).mkdir(parents=True, exist_ok=True)


def simulate(
    out_dir: Path,
    params: WorldParams,
    steps: int,
    start: datetime = DEFAULT_START,
    zipped: bool = False,
    progress: bool = False,
    overwrite: bool = False,
) -> SimulationSummary:
    """Run the world for ``steps`` slots and write exports, truth files and ``world.json``."""
    began = time.perf_counter()
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    world = World(params, load_codebook(), tuple(COUNTRIES))
    writer_rng = np.random.default_rng([params.seed, 1])
    next_id = FIRST_GLOBALEVENTID
    events = 0
    for _ in tqdm(range(steps), desc="simulate", unit="slot", disable=not progress):
        step = world.step()
        moment = slot_time(start, step.t)
        lines = format_rows(step.events, world.actors, world.codebook, moment, next_id, writer_rng)
        write_export(out_dir, moment, lines, zipped)
        write_truth(
            out_dir / TRUTH_DIR / f"{slot_stamp(moment)}.parquet",
            truth_frame(step.t, step.truth, world.actors),
        )
        next_id += len(lines)
        events += len(lines)
    write_manifest(out_dir, manifest(params, world.actors, start, steps, zipped))
    summary = SimulationSummary(
        out_dir=out_dir,
        steps=steps,
        events=events,
        actors_start=params.n_actors,
        actors_end=world.n_actors,
        seconds=time.perf_counter() - began,
    )
    log.info(
        "simulate_done",
        out_dir=str(out_dir),
        steps=steps,
        events=events,
        actors_start=summary.actors_start,
        actors_end=summary.actors_end,
        seconds=round(summary.seconds, 3),
    )
    return summary


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``geopol simulate`` argument parser (its ``--help`` documents the outputs)."""
    parser = argparse.ArgumentParser(
        prog="geopol simulate",
        description="Generate an offline, seeded GDELT 2.0 event feed from a stochastic world\n"
        "(recurring dyads, reciprocity, escalation, new actors) together with the\n"
        "exact next-step object distributions.",
        epilog=(
            "outputs in --out:\n"
            "  YYYYMMDDHHMMSS.export.CSV[.zip]  one GDELT 2.0 export file per 15-minute slot\n"
            "  truth/YYYYMMDDHHMMSS.parquet     columns t, subject, relation, object, prob:\n"
            "                                   P(object | subject, EventRootCode) for that slot\n"
            "  world.json                       seed, parameters and every actor\n"
            f"one slot is {int(SLOT.total_seconds() // 60)} minutes; 96 slots = one day. "
            "The same seed and options give byte-identical files."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = WorldParams()
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default: RUN_DIR/{OUT_SUBDIR}, RUN_DIR being the config's "
        "paths.run_dir or GEOPOL_RUN_DIR)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="pipeline config giving RUN_DIR and the logging settings "
        "(default: configs/default.yaml)",
    )
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=96,
        help="number of 15-minute slots = export files (default: 96, one day)",
    )
    parser.add_argument(
        "--actors",
        type=_positive_int,
        default=defaults.n_actors,
        help=f"actors at the start (default: {defaults.n_actors})",
    )
    parser.add_argument(
        "--events-per-step",
        type=float,
        default=defaults.events_per_step,
        help="stationary mean events per slot (default: %(default)s)",
    )
    parser.add_argument(
        "--birth-rate",
        type=float,
        default=defaults.birth_rate,
        help="expected new actors per slot (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)"
    )
    parser.add_argument(
        "--start",
        type=parse_start,
        default=DEFAULT_START,
        help="first slot, UTC, ISO 8601 or YYYYMMDDHHMMSS on a 15-minute "
        "boundary (default: 2024-01-01T00:00:00Z)",
    )
    parser.add_argument(
        "--zip", action="store_true", help="write .export.CSV.zip files as GDELT ships them"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier simulation in --out (removes only its files)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``geopol simulate``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        params = WorldParams(
            seed=args.seed,
            n_actors=args.actors,
            events_per_step=args.events_per_step,
            birth_rate=args.birth_rate,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.actors > MAX_ACTORS:
        parser.error(f"--actors {args.actors} exceeds the {MAX_ACTORS} distinct actor codes")
    config = load_config(args.config)
    configure_logging("simulate", config.logging.level, config.logging.format)  # on stderr
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        summary = simulate(
            args.out or config.paths.run_dir / OUT_SUBDIR,
            params,
            args.steps,
            start=args.start,
            zipped=args.zip,
            progress=progress,
            overwrite=args.overwrite,
        )
    except FileExistsError as exc:
        print(f"geopol simulate: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary.steps} slots, {summary.events} events, actors "
        f"{summary.actors_start} -> {summary.actors_end}, to {summary.out_dir} "
        f"in {summary.seconds:.1f} s"
    )
    return 0
