"""``geopol ingest backfill``: fetch a live deployment's history before anything is trained.

A first start of the live feed has an empty store, and a graph model needs past steps: the live
feed alone brings one every 15 minutes. This command fetches the ``ingest.live.bootstrap_days``
newest days of GDELT 2.0 exports (96 slots a day, up to the slot ``lastupdate.txt`` names) into
the live poller's own download folder and fetch ledger, then ingests them into the event store,
so ``geopol pipeline bootstrap`` can go on to ``dataset from-store`` and train.

Why through the poller's ledger: an interrupted run (Ctrl-C, SIGTERM, SIGKILL, a dead server)
resumes where it stopped on the next try, without asking twice for a slot it holds, and the
serving poller later skips every slot the history brought. A slot GDELT never published (404) is
recorded ``missing`` and not asked for again. A download given up (a corrupt zip, a server
error) fails the run, naming the slot: the history is then incomplete, so the file that proves
it done (``RUN_DIR/live/DATASET-history.json``) is not written and the bootstrap stops here.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from services.ingest.export_ingest import ingest_paths
from services.ingest.live import History, LivePoller, Stopped
from services.ingest.mapping import MappingConfig
from shared.atomic import atomic_write_text
from shared.config import DEFAULT_CONFIG, Config, load_config
from shared.event_store import EventStore
from shared.live_state import history_path
from shared.log import configure_logging, get_logger

log = get_logger(__name__)

SLOTS_PER_DAY = 96
VERSION = 1
"""Of the history record; bumped when a field changes meaning."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol ingest backfill",
        description="Fetch the newest N days of live GDELT 2.0 exports (ingest.live.base_url; "
        "96 slots a day, up to the one lastupdate.txt names) and ingest them into the event "
        "store: the history a first live start trains on. Older slots are checked by "
        "Content-Length and zip CRCs (GDELT publishes no MD5 for them), the newest against "
        "lastupdate's size and MD5. Resumable: a rerun asks only for slots it does not hold; a "
        "slot the server never published (404) is recorded missing. Exit 1 when a download "
        "was given up (rerun to retry it).",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="pipeline config YAML with ingest.live set (default: configs/default.yaml)",
    )
    parser.add_argument(
        "--days",
        type=int,
        help="days of history (default: ingest.live.bootstrap_days)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


@contextmanager
def _stopped_by_sigterm(stop: threading.Event) -> Iterator[None]:
    """SIGTERM sets ``stop`` (the poller then ends within one socket read) instead of killing
    the process mid-write; the previous handler comes back afterwards."""
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fetch(poller: LivePoller, slots: int, progress: bool) -> History:
    """The history's downloads, with a bar over the slots the ledger lacked."""
    bars: list[tqdm] = []

    def begin(total: int) -> None:
        bars.append(tqdm(total=total, desc="history", unit="slot", disable=not progress))

    def done(name: str, path: Path | None) -> None:
        bars[0].set_postfix_str(name.split(".")[0], refresh=False)
        bars[0].update()

    try:
        return poller.fetch_history(slots, begin=begin, done=done)
    finally:
        for bar in bars:
            bar.close()


def _ingest_pending(
    poller: LivePoller, config: Config, before: str | None, progress: bool
) -> tuple[int, int]:
    """Ingest every fetched file not yet ingested, oldest first, stopping short of ``before``
    (the oldest slot not fetched, None when none is); (files stored, quadruples).

    Time order is what keeps the store the same as an uninterrupted history: entity ids are
    given in the order names first appear, and a step once closed refuses late rows, so the
    slots after a failed one wait in the ledger until the retry brings it. A file that cannot
    be read is quarantined with its reason (as the stage does) and counted as handled, so one
    bad export does not block the history forever.
    """
    mapping = MappingConfig(**config.ingest.mapping.model_dump())
    store = EventStore(
        config.store_dir,
        step_minutes=mapping.step_minutes,
        min_free_bytes=config.ingest.min_free_mb << 20,
    )
    ready = [p for p in poller.pending() if before is None or p.name < before]
    stats = ingest_paths(ready, store, mapping, config.quarantine_dir, progress=progress)
    for path in ready:  # a kill before this re-ingests them, which the store skips by hash
        poller.mark_ingested(path.name)
    stored = [s for s in stats if not s.already_ingested]
    return len(stored), sum(s.kept for s in stored)


def _record(config: Config, days: int, newest: str, oldest: str, counts: dict[str, int]) -> Path:
    """Write the record that proves the history complete (what the bootstrap step waits for)."""
    path = history_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"version": VERSION, "days": days, "oldest": oldest, "newest": newest, **counts}
    atomic_write_text(path, json.dumps(record | {"finished_at": time.time()}, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = load_config(args.config)
    configure_logging("ingest", config.logging.level, config.logging.format)
    live = config.ingest.live
    if live is None:
        print(f"geopol ingest backfill: ingest.live is not set in {args.config}", file=sys.stderr)
        return 2
    days = live.bootstrap_days if args.days is None else args.days
    if days < 1:
        print(
            f"geopol ingest backfill: no history asked for (--days {days}; set --days or "
            f"ingest.live.bootstrap_days in {args.config})",
            file=sys.stderr,
        )
        return 2
    progress = not args.no_progress and sys.stderr.isatty()
    stop = threading.Event()
    poller = LivePoller(
        live.base_url,
        config.download_dir,
        config.fetch_ledger_path,
        retries=live.retries,
        backoff_s=live.backoff_s,
        stop=stop,
    )
    slots = days * SLOTS_PER_DAY
    with _stopped_by_sigterm(stop):
        try:
            history = _fetch(poller, slots, progress)
        except Stopped:
            print("geopol ingest backfill: stopped; run it again to resume", file=sys.stderr)
            return 130
        failed = list(poller.errors)
        oldest, newest = history.names[0], history.names[-1]
        states = poller.ledger.states_between(oldest, newest)
        gaps = [name for name in history.names if name not in states]
        files, quads = _ingest_pending(poller, config, gaps[0] if gaps else None, progress)
    states = poller.ledger.states_between(oldest, newest)
    counts = {
        "slots": slots,
        "fetched_now": len(history.fetched),
        "held": sum(state == "ingested" for state in states.values()),
        "missing": sum(state == "missing" for state in states.values()),
        "failed": len(failed),
    }
    print(
        f"history {oldest[:14]}..{newest[:14]} ({days} day(s), {slots} slots): "
        f"{counts['fetched_now']} fetched now, {counts['held']} held, {counts['missing']} not "
        f"published (404), {counts['failed']} failed; ingested {files} new file(s), "
        f"{quads} quadruples into {config.store_dir}"
    )
    if failed:
        for line in failed:
            print(f"geopol ingest backfill: {line}", file=sys.stderr)
        print(
            f"geopol ingest backfill: {len(failed)} slot(s) not fetched; the history is "
            f"incomplete and the {len(poller.pending())} fetched after the first of them wait "
            "to be ingested in time order; run it again to retry them",
            file=sys.stderr,
        )
        return 1
    print(f"history complete: {_record(config, days, newest, oldest, counts)}")
    return 0
