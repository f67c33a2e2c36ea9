"""The ingest stage process: watch the source, store new events, emit snapshots and queries.

A thin loop (shared.runtime) around :class:`IngestStage`: each tick ingests export files that
appeared in the source folder, closes finished time steps (snapshot + the next step's queries
into the journal), and (re)sends due work items within the credit window; each ``done`` from
calibrate marks its item finished.

The stage sends its own messages on the ``queries`` socket, without blocking, instead of
returning them to the runtime's outbox: the journal must record a query as sent only once it
has left the socket, and a message waiting in an outbox the stage cannot see would either be
counted in flight while it was not (its timeout running, its attempts used up while the graph
is down) or queued a second time. The journal is this stage's durable outbox; a query the
socket does not take now simply stays due, and snapshots wait, in order, in front of them.

Late rows for a closed step are refused (the decision, and why, is "Closed steps" in
shared/event_store.py): closing a step closes the event store through it first, so the facts
the snapshot carries are the facts the store will always hold for that step, and only then
journals the next step's queries and the step with its snapshot unsent. The snapshot is built
again from the store whenever it has not left yet, after a restart too; a graph stage fed by
snapshots and one rebuilt from the store therefore hold the same history. Rows a later file
brings for a closed step go to the quarantine with the reason ``step_closed``.

Unreadable export files are quarantined (``file_quarantine``) and a full disk pauses reading
for ``DISK_RETRY_S``; neither stops the stage, which keeps answering and re-sending meanwhile.

With ``ingest.live`` set, ``main`` starts the live poller (services/ingest/live.py) in a thread
beside the loop, and stops it when the loop ends (SIGTERM): the poller is interrupted, joined
for at most ``LIVE_STOP_S`` and its state (last poll, file, error) is in ``RUN_DIR/live/`` for
``geopol status`` (services/ingest/live_report.py).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq
from prometheus_client import CollectorRegistry

from services.ingest.export_ingest import ingest_unless_quarantined
from services.ingest.gdelt_reader import source_files
from services.ingest.live import LivePoller, run_live
from services.ingest.live_report import LiveReporter
from services.ingest.mapping import MappingConfig
from services.ingest.work import steps_to_close
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.event_store import DiskFloorError, EventStore
from shared.file_quarantine import FileQuarantine
from shared.journal import Journal
from shared.live_state import state_path
from shared.log import configure_logging, get_logger
from shared.protocol import Limits, Message, MessageType
from shared.runtime import Route, StageRuntime
from shared.sockets import send_message
from shared.work_messages import next_queries, query_message, snapshot_message

log = get_logger(__name__)
OUT = "queries"
DISK_RETRY_S = 60.0
"""How long ingest waits before reading files again after the store refused a write."""
LIVE_STOP_S = 5.0
"""How long ``close`` waits for the poller thread: a stopped poller ends after its current
socket read, which a server that sends nothing holds for the socket timeout (30 s). Past this
the thread (a daemon) dies with the process and its temp file is removed at the next start;
well inside the grace ``geopol pipeline`` gives a stage before SIGKILL (shared/pipeline.py)."""

Send = Callable[[Message], bool]
"""Hand one message to the socket now: True when it left, False when no peer takes it now.
Raises ValueError when the message cannot be encoded at all."""


def nonblocking_send(socket: zmq.Socket, message: Message, limits: Limits) -> bool:
    """Send without waiting; False when the socket has no ready peer (``zmq.Again``)."""
    try:
        send_message(socket, message, limits, zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True


class IngestStage:
    """State and behaviour of the ingest stage, independent of sockets.

    ``send`` is how its messages leave (see :data:`Send`); ``clock`` is the monotonic clock
    that times re-sends and disk back-off.
    """

    def __init__(
        self, config: Config, send: Send, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.settings = config.ingest
        self.mapping = MappingConfig(**self.settings.mapping.model_dump())
        self.store = EventStore(
            config.store_dir,
            step_minutes=self.mapping.step_minutes,
            min_free_bytes=self.settings.min_free_mb << 20,
        )
        self.journal = Journal(config.journal_path)
        self.quarantine = FileQuarantine(config.quarantine_dir)
        self.send = send
        self.clock = clock
        self.journal.resume(clock())
        closed = self.journal.closed_steps()
        if closed:  # the store is closed through every closed step (one written before it was)
            self.store.close_through(max(closed))
        self._seen_files: set[str] = set()
        self._snapshots: dict[int, Message] = {}  # built and not yet sent, by step
        self._read_after = 0.0
        self._source = config.download_dir if self.settings.live else self.settings.source
        self._stop_live = threading.Event()
        self._live_thread: threading.Thread | None = None
        # GDELT 2.0 files are 15 minutes each: with 15-minute steps a file closes its step.
        self._close_latest = (
            self.mapping.time_field == "dateadded" and self.mapping.step_minutes == 15
        )

    def start_live(self, registry: CollectorRegistry | None = None) -> threading.Thread | None:
        """Download new GDELT 2.0 exports in the background into the folder ``tick`` reads.

        Downloading is slow and may wait on retries, so it runs beside the loop; the store's
        content hashes make the hand-over idempotent, and the folder survives a crash. After
        every poll its state goes to ``RUN_DIR/live/DATASET.json`` and, given the stage's
        ``registry``, to gauges on its metrics endpoint. None when ``ingest.live`` is not set.
        """
        live = self.settings.live
        if live is None:
            return None
        poller = LivePoller(
            live.base_url,
            self.config.download_dir,
            self.config.fetch_ledger_path,
            retries=live.retries,
            backoff_s=live.backoff_s,
            backfill=live.backfill,
            stop=self._stop_live,
        )
        reporter = LiveReporter(state_path(self.config), registry)
        thread = threading.Thread(
            target=run_live,
            args=(poller, lambda _path: None),
            kwargs={
                "interval_s": live.interval_s,
                "stop": self._stop_live,
                "report": reporter.report,
                "state": reporter.previous(poller.lastupdate_url),
            },
            name="live-poller",
            daemon=True,
        )
        thread.start()
        self._live_thread = thread
        return thread

    def close(self) -> None:
        """Stop the live poller (if any), wait for it, and close the journal."""
        self._stop_live.set()
        thread = self._live_thread
        if thread is not None:
            thread.join(LIVE_STOP_S)
            if thread.is_alive():
                log.warning("live_stop_timeout", waited_s=LIVE_STOP_S)
        self.journal.close()

    def handle(self, _socket: str, message: Message) -> list[Route]:
        """A ``done`` from calibrate finishes its work item (duplicates are harmless)."""
        if self.journal.mark_done(message.id):
            log.debug("item_done", item=message.id)
        return []

    def tick(self, _now: float) -> list[Route]:
        """Ingest what arrived, close finished steps, and send what is due.

        The runtime's ``now`` is wall-clock and unused: timeouts run on ``self.clock``. Returns
        no routes, because the stage sends its own messages (see the module docstring).
        """
        now = self.clock()
        if now >= self._read_after:
            self._ingest_new_files(now)
        self._close_steps()
        if self._send_snapshots():
            self._send_due(now)
        return []

    def _ingest_new_files(self, now: float) -> None:
        source = self._source
        if source is None or not source.exists():
            return
        for path in source_files(source):
            if path.name in self._seen_files:
                continue
            try:
                ingest_unless_quarantined(path, self.store, self.mapping, self.quarantine)
            except FileNotFoundError:
                continue  # removed since the folder was listed; nothing to read
            except DiskFloorError as exc:
                self._read_after = now + DISK_RETRY_S
                log.error("ingest_paused", source=path.name, retry_s=DISK_RETRY_S, error=str(exc))
                return
            if not self.quarantine.holds(path):  # a quarantined file is looked at again later
                self._seen_files.add(path.name)

    def _close_steps(self) -> None:
        """Close finished steps, oldest first: the store, then the queries, then the journal.

        A crash between any two leaves a step the next tick closes again with the same facts:
        closing the store is idempotent and adding queries ignores ids already journaled.
        """
        dataset = self.settings.dataset
        for step in steps_to_close(
            self.store.steps(), self.journal.closed_steps(), self._close_latest
        ):
            self.store.close_through(step)
            triples = self.store.snapshot(step)
            self._snapshots[step] = self._snapshot(step, triples)
            added = self.journal.add(
                next_queries(dataset, step, triples, self.settings.queries_per_step)
            )
            self.journal.close_step(step)
            log.info("step_closed", step=step, facts=len(triples), queries=added)

    def _snapshot(self, step: int, triples: np.ndarray) -> Message:
        store = self.store
        return snapshot_message(
            self.settings.dataset, step, triples, store.num_entities, store.num_relations
        )

    def _send_snapshots(self) -> bool:
        """Send the journal's unsent snapshots in order; True when none is left (queries may
        go). One not built in this process (it died with it unsent) is built from the store."""
        for step in self.journal.unsent_snapshots():
            snapshot = self._snapshots.get(step)
            if snapshot is None:
                snapshot = self._snapshot(step, self.store.snapshot(step))
            try:
                if not self.send(snapshot):
                    self._snapshots[step] = snapshot  # kept, not read from the store every tick
                    return False
            except ValueError as exc:  # can never be encoded: waiting would block every query
                log.error("snapshot_unsendable", msg_id=snapshot.id, error=str(exc))
            self.journal.finish_snapshot(step)
            self._snapshots.pop(step, None)
        return True

    def _send_due(self, now: float) -> None:
        """Fail items out of attempts, then send what is due until the socket stops taking."""
        settings = self.settings
        for item_id, reason in self.journal.expire(
            now, settings.resend_timeout_s, settings.max_attempts
        ).items():
            log.warning("item_failed", item=item_id, reason=reason)
        sent: list[str] = []
        try:
            for item in self.journal.due(now, settings.resend_timeout_s, settings.window):
                try:
                    if not self.send(query_message(item)):
                        break
                except ValueError as exc:
                    self.journal.fail(item.id, f"cannot be sent: {exc}")
                    log.error("item_failed", item=item.id, reason=str(exc))
                    continue
                sent.append(item.id)
        finally:  # what left is recorded even when a later send raises
            self.journal.mark_sent(sent, now)


def refusal(config: Config, config_path: Path) -> str | None:
    """Why ``geopol serve ingest`` cannot do its job with this config, or None.

    Checked before anything starts, so a mistyped path is a message, not a stage that idles.
    """
    ingest = config.ingest
    if ingest.live is None and ingest.source is None:
        return (
            f"neither ingest.source nor ingest.live is set in {config_path}; "
            "set one (a folder of exports, or live GDELT 2.0)"
        )
    if ingest.source is not None and not ingest.source.exists():
        return (
            f"ingest.source not found: {ingest.source} (resolved {ingest.source.resolve()}) "
            f"in {config_path}; write exports there first (geopol simulate) or fix the path"
        )
    stage = config.stages.get("ingest")
    if stage is None or OUT not in stage.sockets:
        return f"stages.ingest.sockets.{OUT} is not set in {config_path}; queries have no socket"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geopol serve ingest", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:  # also run as `python -m` by `geopol pipeline`, outside shared.cli
        print(f"geopol serve ingest: {exc}", file=sys.stderr)
        return 2
    problem = refusal(config, args.config)
    if problem is not None:
        print(f"geopol serve ingest: {problem}", file=sys.stderr)
        return 2
    configure_logging("ingest", config.logging.level, config.logging.format)
    runtime: StageRuntime  # the stage sends on the runtime's socket, opened in run()
    stage = IngestStage(
        config, lambda message: nonblocking_send(runtime.sockets[OUT], message, runtime.limits)
    )
    accepts = {"done": frozenset({MessageType.DONE})}
    runtime = StageRuntime("ingest", config, stage.handle, tick=stage.tick, accepts=accepts)
    stage.start_live(runtime.metrics.registry)
    try:
        return runtime.run()
    finally:
        stage.close()


if __name__ == "__main__":
    sys.exit(main())
