"""``geopol replay``: replay a GDELT dataset through the running pipeline as if it were live, and
report its online scorecard beside the recurrency baseline's.

What a replay does, and why each step:

1. **Cut the data into days** (shared/replay_days.py): the event files of ``--data`` (GDELT-GEORGIA
   from the team data, say) become one file per SQLDATE, lines copied byte for byte.
2. **A config of its own**, ``RUN_DIR/replay/config.yaml``: the given config with the run dir,
   ``ingest.source`` pointed at the replay's feed folder, and retraining as asked
   (``--retrain-every N`` closed steps, or ``--no-retrain``). Every command below reads it, so
   the stages, the retrainer and the report agree on where everything is.
3. **History, then the bootstrap**: the days before ``--from`` (and the undated lines, which
   ingest quarantines) go into the feed, and ``geopol pipeline bootstrap`` builds the artifacts
   from them — the same chain ``make pipeline-up`` runs. The history's steps are then journaled
   as closed, all but the last: the pipeline starts as a deployment that had served until
   ``--from`` would, and forecasts nothing of the past (their snapshots still reach the graph).
4. **Serve, a day at a time**: ``geopol pipeline up`` (with the retrainer when retraining is on),
   then each day from ``--from`` lands in the feed; the replay waits until ingest has closed the
   day before (so the day's questions exist) and every question is answered (none pending or in
   flight in the ingest journal) before the next day lands. With retraining on, once
   ``retrain.every_steps`` steps have closed since the served generation's data, it also waits
   until the retrainer has promoted the next generation: live, a day is 24 hours and a retrain
   minutes, so replaying faster than retraining would measure a pipeline that never existed.
   The stages switch to it at the next day's step boundary. The last day delivered only closes
   the one before it: it is not forecast-and-resolved itself.
5. **Report**: once the calibrate stage has resolved the last forecast day (its scorecard.json
   says so), ``geopol eval online`` writes the scorecard to reports/eval.json under
   ``"<dataset>": {"online": {"<label>": ...}}`` with a PNG, and ``geopol pipeline down`` stops
   everything (``--keep-up`` leaves it running).

A replay cut short resumes: rerun the same command and the days already in the feed are not
delivered again (the ingest journal and the calibrate ledger never do anything twice). Each step
is the ``geopol`` command a person would type, run as a child process; shared/ imports no stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from shared import generations
from shared.bootstrap import Runner, geopol
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.journal import Journal
from shared.replay_days import DayFiles, event_files, split_days
from shared.retrain import read_state, steps_since

REPLAY_DIR = "replay"
FEED_DIR = "feed"
CONFIG_NAME = "config.yaml"
EPOCH = date(1970, 1, 1)
DAY_MINUTES = 1440
POLL_S = 0.5


class ReplayError(RuntimeError):
    """The replay cannot go on; the message says where it stopped and why."""


def step_of(day: date) -> int:
    """The store's time step of a day with daily steps (steps count from the Unix epoch)."""
    return (day - EPOCH).days


def replay_config(
    config_path: Path, run_dir: Path | None, retrain_every: int | None, retrain: bool
) -> tuple[Path, Config]:
    """Write ``RUN_DIR/replay/config.yaml`` from ``config_path`` and load it."""
    settings = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    base = load_config(config_path)
    root = (run_dir or base.paths.run_dir).resolve()
    mapping = base.ingest.mapping
    if mapping.time_field != "sqldate" or mapping.step_minutes != DAY_MINUTES:
        raise ConfigError(
            f"{config_path}: ingest.mapping must be time_field: sqldate with step_minutes: "
            f"{DAY_MINUTES} for a daily replay (it has {mapping.time_field}, "
            f"{mapping.step_minutes})"
        )
    settings.setdefault("paths", {})["run_dir"] = str(root)
    ingest = settings.setdefault("ingest", {})
    ingest.pop("live", None)
    ingest["source"] = str(root / REPLAY_DIR / FEED_DIR)
    every = retrain_every or (settings.get("retrain") or {}).get("every_steps")
    settings.setdefault("retrain", {})["every_steps"] = every if retrain else None
    path = root / REPLAY_DIR / CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return path, load_config(path)


def prime_journal(config: Config, history_steps: list[int]) -> int:
    """Journal every history step but the last as closed (snapshot unsent, no questions), once:
    a replay forecasts from ``--from`` on, not the past. How many steps it closed."""
    if config.journal_path.is_file() or len(history_steps) < 2:
        return 0
    journal = Journal(config.journal_path)
    try:
        for step in history_steps[:-1]:
            journal.close_step(step)
    finally:
        journal.close()
    return len(history_steps) - 1


def _journal_state(config: Config) -> tuple[set[int], dict[str, int], int]:
    journal = Journal(config.journal_path)
    try:
        return journal.closed_steps(), journal.counts(), len(journal.unsent_snapshots())
    finally:
        journal.close()


def wait_answered(
    config: Config, step: int, timeout_s: float, clock: Callable[[], float] = time.monotonic
) -> dict[str, int]:
    """Wait until ingest has closed ``step`` and no question is pending or in flight."""
    deadline = clock() + timeout_s
    while True:
        if config.journal_path.is_file():
            closed, counts, unsent = _journal_state(config)
            if step in closed and not unsent and not counts["pending"] + counts["in_flight"]:
                return counts
        else:
            closed, counts, unsent = set(), {}, 0
        if clock() > deadline:
            raise ReplayError(
                f"step {step} not answered within {timeout_s:.0f}s (closed: {step in closed}; "
                f"journal {counts}, {unsent} snapshot(s) unsent); see `geopol status --config "
                f"{config.paths.run_dir / REPLAY_DIR / CONFIG_NAME}` and RUN_DIR/log/*.log"
            )
        time.sleep(POLL_S)


def wait_retrained(
    config: Config, every_steps: int, timeout_s: float, clock: Callable[[], float] = time.monotonic
) -> generations.Generation | None:
    """When ``every_steps`` steps have closed since the served generation's data, wait until the
    retrainer promotes the next one and return it; None when no retrain is due."""
    served = generations.current(config)
    if steps_since(config, served) < every_steps:
        return None
    deadline = clock() + timeout_s
    while True:
        now = generations.current(config)
        if now.number > served.number:
            return now
        state = read_state(config)
        if state is not None and state.state == "failed" and state.building == served.number + 1:
            raise ReplayError(
                f"retraining generation {served.number + 1} failed: {state.last_error} (see "
                f"RUN_DIR/log/retrain.log; --no-retrain replays without it)"
            )
        if clock() > deadline:
            raise ReplayError(
                f"generation {served.number + 1} not promoted within {timeout_s:.0f}s "
                f"(retrainer: {state.state if state else 'no state yet'})"
            )
        time.sleep(POLL_S)


def scorecard_path(config: Config) -> Path:
    """The calibrate stage's latest scorecard (its documented output, one JSON object)."""
    return config.paths.run_dir / "calibrate" / config.ingest.dataset / "scorecard.json"


def wait_resolved(
    config: Config, step: int, timeout_s: float, clock: Callable[[], float] = time.monotonic
) -> dict[str, Any]:
    """Wait until the calibrate stage has resolved ``step`` (or a later one)."""
    path, deadline = scorecard_path(config), clock() + timeout_s
    while True:
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
            if int(card["step"]) >= step:
                return card
        except (OSError, ValueError, KeyError):
            card = None
        if clock() > deadline:
            seen = card["step"] if card else "none"
            raise ReplayError(
                f"step {step} not resolved within {timeout_s:.0f}s (latest scorecard: {seen}, "
                f"{path})"
            )
        time.sleep(POLL_S)


def _must(runner: Runner, args: list[str], what: str) -> None:
    status = runner(args)
    if status != 0:
        raise ReplayError(f"{what} failed (exit {status}): geopol {' '.join(args)}")


def _days(cut: DayFiles, start: date, count: int | None) -> tuple[list[date], list[date]]:
    """(history days before ``start``, the days to deliver from ``start`` on, at most
    ``count`` + 1: the last one only closes the day before it)."""
    days = sorted(cut.days)
    history = [d for d in days if d < start]
    live = [d for d in days if d >= start]
    if count is not None:
        live = live[: count + 1]
    if len(history) < 2:
        raise ReplayError(f"--from {start}: {len(history)} day(s) of history before it; need 2+")
    if len(live) < 2:
        raise ReplayError(f"--from {start}: {len(live)} day(s) from it on; need 2+ to score one")
    return history, live


def replay(args: argparse.Namespace, runner: Runner = geopol) -> int:
    """Run a replay as the module docstring says; 0 when its report is written."""
    cut = split_days(event_files(args.data))
    history, live = _days(cut, args.start, args.days)
    config_path, config = replay_config(
        args.config, args.run_dir, args.retrain_every, not args.no_retrain
    )
    feed = Path(config.ingest.source)
    cfg = ["--config", str(config_path)]
    label = args.label or ("no-retrain" if args.no_retrain else "retrain")
    print(
        f"replay {config.ingest.dataset}: {len(history)} history day(s) "
        f"({history[0]}..{history[-1]}), {len(live) - 1} forecast day(s) from {live[0]}; "
        + (
            f"retrain every {config.retrain.every_steps} step(s)"
            if config.retrain.every_steps
            else "retraining off"
        )
        + f"; config {config_path}"
    )
    if not feed.is_dir():
        cut.write_day(None, feed)
        for day in history:
            cut.write_day(day, feed)
    _must(runner, ["pipeline", "bootstrap", *cfg], "bootstrap")
    closed = prime_journal(config, [step_of(d) for d in history])
    if closed:
        print(f"replay: {closed} history step(s) journaled as closed (no forecasts of the past)")
    _must(runner, ["pipeline", "up", "--no-bootstrap", *cfg], "pipeline up")
    try:
        previous = history[-1]
        bar = tqdm(live, desc="replay", unit="day", disable=args.no_progress)
        for day in bar:
            if not any(feed.glob(f"{day:%Y%m%d}.*")):
                cut.write_day(day, feed)
            counts = wait_answered(config, step_of(previous), args.day_timeout_s)
            if config.retrain.every_steps and day != live[-1]:  # the last only closes
                promoted = wait_retrained(config, config.retrain.every_steps, args.day_timeout_s)
                if promoted is not None:
                    bar.write(f"replay: generation {promoted.number} promoted after {day}")
            bar.set_postfix(day=str(day), done=counts["done"], failed=counts["failed"])
            previous = day
        last_forecast = step_of(live[-2])
        card = wait_resolved(config, last_forecast, args.day_timeout_s)
        print(f"replay: resolved through step {card['step']} ({live[-2]})")
        _must(runner, ["eval", "online", *cfg, "--window", str(args.window), "--label", label,
                       "--reports", str(args.reports)], "the online report")  # fmt: skip
    finally:
        if not args.keep_up:
            runner(["pipeline", "down", *cfg])
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="pipeline config with a daily sqldate mapping "
                        "(configs/gdelt-georgia-replay.yaml)")  # fmt: skip
    parser.add_argument("--data", type=Path, required=True,
                        help="GDELT event files (a folder of CSV/TSV, or one file)")  # fmt: skip
    parser.add_argument("--from", dest="start", type=_day, required=True, metavar="YYYY-MM-DD",
                        help="first day forecast; the days before it are the history")  # fmt: skip
    parser.add_argument("--days", type=int, help="days forecast (default: every day after --from)")
    parser.add_argument("--run-dir", type=Path, help="run dir (default: the config's)")
    parser.add_argument("--retrain-every", type=int, metavar="N",
                        help="retrain after N closed steps (default: retrain.every_steps)")  # fmt: skip
    parser.add_argument("--no-retrain", action="store_true", help="serve generation 0 only")
    parser.add_argument("--window", type=int, default=7, help="steps per scorecard window")
    parser.add_argument("--label", help="the report entry (default: retrain or no-retrain)")
    parser.add_argument("--reports", type=Path, default=Path("reports/eval.json"))
    parser.add_argument("--day-timeout-s", type=float, default=1800.0,
                        help="give up when a day is not answered within this (default 1800)")  # fmt: skip
    parser.add_argument("--keep-up", action="store_true", help="leave the pipeline running")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _day(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day as YYYY-MM-DD") from None


def main(argv: list[str] | None = None) -> int:
    return replay(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
