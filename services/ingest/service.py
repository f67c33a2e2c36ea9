"""The ingest stage process: watch the source, store new events, emit snapshots and queries.

A thin loop (shared.runtime) around :class:`IngestStage`: each tick ingests export files that
appeared in the source folder, closes finished time steps (snapshot + the next step's queries
into the journal), and (re)sends due work items within the credit window; each ``done`` from
calibrate marks its item finished.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from services.ingest.export_ingest import ingest_file
from services.ingest.gdelt_reader import source_files
from services.ingest.journal import Journal
from services.ingest.live import LivePoller, run_live
from services.ingest.mapping import MappingConfig
from services.ingest.work import next_queries, query_message, snapshot_message, steps_to_close
from shared.config import DEFAULT_CONFIG, Config, load_config
from shared.event_store import EventStore
from shared.log import configure_logging, get_logger
from shared.protocol import Message, MessageType
from shared.runtime import Route, StageRuntime

log = get_logger(__name__)
OUT = "queries"


class IngestStage:
    """State and behaviour of the ingest stage, independent of sockets."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.ingest
        self.mapping = MappingConfig(**self.settings.mapping.model_dump())
        self.store = EventStore(
            config.store_dir,
            step_minutes=self.mapping.step_minutes,
            min_free_bytes=self.settings.min_free_mb << 20,
        )
        self.journal = Journal(config.journal_path)
        self._seen_files: set[str] = set()
        self._source = config.download_dir if self.settings.live else self.settings.source
        self._stop_live = threading.Event()
        # GDELT 2.0 files are 15 minutes each: with 15-minute steps a file closes its step.
        self._close_latest = (
            self.mapping.time_field == "dateadded" and self.mapping.step_minutes == 15
        )

    def start_live(self) -> threading.Thread | None:
        """Download new GDELT 2.0 exports in the background into the folder ``tick`` reads.

        Downloading is slow and may wait on retries, so it runs beside the loop; the store's
        content hashes make the hand-over idempotent, and the folder survives a crash.
        """
        live = self.settings.live
        if live is None:
            return None
        poller = LivePoller(
            live.base_url,
            self.config.download_dir,
            self.config.fetch_ledger_path,
            backfill=live.backfill,
        )
        thread = threading.Thread(
            target=run_live,
            args=(poller, lambda _path: None),
            kwargs={"interval_s": live.interval_s, "stop": self._stop_live},
            name="live-poller",
            daemon=True,
        )
        thread.start()
        return thread

    def close(self) -> None:
        self._stop_live.set()
        self.journal.close()

    def handle(self, _socket: str, message: Message) -> list[Route]:
        """A ``done`` from calibrate finishes its work item (duplicates are harmless)."""
        if self.journal.mark_done(message.id):
            log.debug("item_done", item=message.id)
        return []

    def tick(self, now: float) -> list[Route]:
        """Ingest what arrived, close finished steps, and send what is due."""
        self._ingest_new_files()
        routes = self._close_steps()
        due = self.journal.due(now, self.settings.resend_timeout_s, self.settings.window)
        if due:
            self.journal.mark_sent([item.id for item in due], now)
            routes += [(OUT, query_message(item)) for item in due]
        return routes

    def _ingest_new_files(self) -> None:
        source = self._source
        if source is None or not source.exists():
            return
        for path in source_files(source):
            if path.name in self._seen_files:
                continue
            ingest_file(path, self.store, self.mapping, self.config.quarantine_dir)
            self._seen_files.add(path.name)

    def _close_steps(self) -> list[Route]:
        routes: list[Route] = []
        dataset = self.settings.dataset
        for step in steps_to_close(
            self.store.steps(), self.journal.closed_steps(), self._close_latest
        ):
            triples = self.store.snapshot(step)
            routes.append(
                (
                    OUT,
                    snapshot_message(
                        dataset, step, triples, self.store.num_entities, self.store.num_relations
                    ),
                )
            )
            added = self.journal.add(
                next_queries(dataset, step, triples, self.settings.queries_per_step)
            )
            self.journal.close_step(step)
            log.info("step_closed", step=step, facts=len(triples), queries=added)
        return routes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geopol serve ingest", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    configure_logging("ingest", config.logging.level, config.logging.format)
    stage = IngestStage(config)
    accepts = {"done": frozenset({MessageType.DONE})}
    try:
        return StageRuntime("ingest", config, stage.handle, tick=stage.tick, accepts=accepts).run()
    finally:
        stage.journal.close()


if __name__ == "__main__":
    sys.exit(main())
