"""The calibrate stage process: SCORES in, calibrated FORECASTs out on PUB, done back to ingest.

A thin loop (shared.runtime) around :class:`CalibrateStage`. For each SCORES message: check it,
turn its scores into probabilities with the live calibration (K candidates and ``other``),
attach the facts that support the top candidates (shared.facts), **record** the forecast with
its sequence number in the ledger, publish it, mark it sent, and send ``done(id)`` to ingest. A
SCORES id the ledger knows is not published again; ``done`` is sent again so ingest stops
re-sending. On start the unsent rows of a crash are re-published with their own sequence numbers.
Every heartbeat publishes ``hugz`` (the last sequence) and resolves the steps whose events have
arrived, publishing one scorecard per step with the rolling one (also written to
RUN_DIR/calibrate/DATASET/scorecard.json).

A SCORES message is calibrated by the calibrator fitted on the scores of the llm artifact it
names: the served one, or that of another finished generation (shared/generations.py), loaded
when its first message arrives, so the forecasts in flight across a retrain's switch are each
calibrated by their own chain. Scores of an llm artifact no calibrator was fitted on are refused
(dead-lettered) by name.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq

from services.calibrate import artifact as calibrator_artifact
from services.calibrate.fit import ProtocolCalibration
from services.calibrate.forecast import (
    ScoresError,
    build_forecast,
    build_unknown_forecast,
    done_message,
    read_scores,
    topic_of,
)
from services.calibrate.ledger import Ledger, Recorded
from services.calibrate.publisher import HUGZ, SCORECARD, Publisher, SnapshotServer, wire_parts
from services.calibrate.resolution import rolling, step_card
from shared import facts as shared_facts
from shared import generations, sim_truth
from shared.abstention import read_abstention
from shared.atomic import atomic_write_text
from shared.calendar import step_date
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.curve import Curve, check
from shared.event_store import EventStore, StoreError
from shared.log import configure_logging, get_logger
from shared.protocol import Limits, Message, MessageType, new_message
from shared.runtime import Route, StageRuntime, limits_of

log = get_logger(__name__)
ACCEPTS = {"scores": frozenset({MessageType.SCORES, MessageType.ABSTAIN})}
DONE = "done"

Send = Callable[[list[bytes]], None]
Served = tuple[ProtocolCalibration, str]
"""A live calibration and the id of the calibrator artifact it comes from."""


class CalibrateStage:
    """State and behaviour of the calibrate stage, independent of sockets: ``send`` takes the
    wire parts of one publication (the PUB socket in the process, a list in tests)."""

    def __init__(
        self,
        calibration: ProtocolCalibration,
        calibrator_id: str,
        ledger: Ledger,
        send: Send,
        limits: Limits,
        store: EventStore | None = None,
        *,
        evidence_candidates: int = 3,
        evidence_facts: int = 3,
        evidence_window: int = 30,
        scorecard_steps: int = 20,
        truth_source: Path | None = None,
        step_minutes: int = 15,
        scorecard_file: Path | None = None,
        find: Callable[[str], Served | None] | None = None,
    ) -> None:
        fitted_on = str(calibration.source.get("llm_artifact"))
        self.calibrations = generations.ByUpstream(
            fitted_on, (calibration, calibrator_id), find or _none
        )
        self.ledger = ledger
        self.send = send
        self.limits = limits
        self.store = store
        self.evidence_candidates = evidence_candidates
        self.evidence_facts = evidence_facts
        self.evidence_window = evidence_window
        self.scorecard_steps = scorecard_steps
        self.truth_source = truth_source
        self.step_minutes = step_minutes
        self.scorecard_file = scorecard_file
        self.duplicates = 0

    # -- forecasts ---------------------------------------------------------------------------
    def handle(self, _socket: str, message: Message) -> list[Route]:
        """One SCORES or ABSTAIN message -> at most one publication, and always ``done`` to
        ingest."""
        if message.type is MessageType.ABSTAIN:
            return self._unknown_to_model(message)
        scored = read_scores(message)  # a bad message raises: the runtime dead-letters it
        served = self.calibrations.named_in(message.meta, "llm_artifact")
        if served is None:
            raise ScoresError(
                f"scores of llm artifact {message.meta.get('llm_artifact')!r}: no calibrator of a finished generation was "
                f"fitted on them (the newest was fitted on {self.calibrations.latest!r})"
            )
        calibration, calibrator_id = served
        if len(scored.candidates) != calibration.k:
            raise ScoresError(
                f"{len(scored.candidates)} candidates; the live calibration was fitted at "
                f"K={calibration.k}"
            )
        lineage = self._lineage(message, calibrator_id)
        calendar = message.meta.get("calendar")
        evidence = self._evidence(calendar) if self.store is not None else None

        def build(seq: int) -> Message:
            return build_forecast(
                scored, calibration, lineage, seq, evidence, self.evidence_candidates
            )

        return self._deliver(message, scored.step, topic_of(scored.subject, scored.relation), build)

    def _unknown_to_model(self, message: Message) -> list[Route]:
        """An abstention -> the forecast that says the model does not know the subject (or
        relation), named from the store's vocabulary, which holds every id ingest gave."""
        abstention = read_abstention(message)  # a bad one raises: the runtime dead-letters it
        names = (
            self._key("entities", abstention.subject, "entity"),
            self._key("relations", abstention.relation, "relation"),
        )
        date = _date(message.meta.get("calendar"), abstention.step)
        served = self.calibrations.named_in(message.meta, "llm_artifact")
        lineage = self._lineage(message, (served or self.calibrations.newest)[1])

        def build(seq: int) -> Message:
            return build_unknown_forecast(abstention, names, date, lineage, seq)

        log.info("forecast_unknown_to_model", msg_id=abstention.id, unknown=abstention.unknown)
        topic = topic_of(abstention.subject, abstention.relation)
        return self._deliver(message, abstention.step, topic, build)

    def _key(self, vocabulary: str, key_id: int, what: str) -> str:
        if self.store is not None:
            try:
                return getattr(self.store, vocabulary).key(key_id)
            except (IndexError, KeyError):
                pass
        return f"{what} {key_id}"

    def _lineage(self, message: Message, calibrator_id: str) -> dict[str, Any]:
        return {
            "graph_artifact": message.meta.get("graph_artifact"),
            "llm_artifact": message.meta.get("llm_artifact"),
            "calibrator_artifact": calibrator_id,
            "data_cutoff": message.meta.get("data_cutoff"),
        }

    def _deliver(
        self, message: Message, step: int, topic: str, build: Callable[[int], Message]
    ) -> list[Route]:
        """Record, publish and mark one forecast (exactly once: a known id is not published
        again), then ``done`` to ingest either way."""

        def parts(seq: int) -> list[bytes]:
            return wire_parts(topic, build(seq), self.limits)

        recorded = self.ledger.record(message.id, step, topic, parts)
        if recorded is None:
            self.duplicates += 1
            log.info("forecast_duplicate_not_republished", msg_id=message.id)
        else:
            self._publish(recorded)
        return [(DONE, done_message(message.id, message.trace_id))]

    def _publish(self, recorded: Recorded) -> None:
        self.send(recorded.parts)
        self.ledger.mark_sent(recorded.seq)
        log.info("forecast_published", msg_id=recorded.id, seq=recorded.seq, topic=recorded.topic)

    def republish_unsent(self) -> int:
        """After a crash between record and mark: publish those rows again, same sequence."""
        rows = self.ledger.unsent()
        for row in rows:
            self._publish(row)
        if rows:
            log.warning("forecasts_republished_after_restart", count=len(rows))
        return len(rows)

    def _evidence(self, calendar: Any) -> Callable[[int, int, int], list[dict[str, Any]]]:
        def facts_of(subject: int, candidate: int, step: int) -> list[dict[str, Any]]:
            found = shared_facts.supporting_facts(
                self.store, subject, candidate, before=step, limit=self.evidence_facts,
                window=self.evidence_window,
            )  # fmt: skip
            return [
                {
                    "t": f.t,
                    "date": _date(calendar, f.t),
                    "fact": f"{f.subject_key} — {f.relation_key} — {f.object_key}",
                    "url": f.source_url,
                }
                for f in found
            ]

        return facts_of

    # -- heartbeat: hugz and resolution -----------------------------------------------------
    def tick(self, _now: float) -> list[Route]:
        self.send(self._hugz())
        if self.store is not None:
            self.resolve_final_steps()
        return []

    def _hugz(self) -> list[bytes]:
        beat = new_message(
            MessageType.HEARTBEAT, "calibrate/hugz", meta={"seq": self.ledger.last_seq()}
        )
        return wire_parts(HUGZ, beat, self.limits)

    def resolve_final_steps(self) -> list[dict[str, Any]]:
        """Score every step with forecasts whose events are final (a later step has data)."""
        steps = self.store.steps()
        if not steps:
            return []
        cards = []
        for step in self.ledger.unresolved_steps():
            if step >= steps[-1]:
                break
            forecasts = [_forecast_meta(row) for row in self.ledger.of_step(step)]
            truth = self._true_distribution if self.truth_source is not None else None
            card = step_card(step, forecasts, self.store.snapshot(step), truth)
            seq = self.ledger.record_scorecard(
                step, lambda _seq, c=card: msgpack.packb(c, use_bin_type=True)
            )
            if seq is not None:
                cards.append(card)
                self._publish_scorecard(seq, card)
        return cards

    def _true_distribution(self, meta: dict[str, Any]) -> dict[int, float] | None:
        """The simulated world's exact distribution of this forecast's object, by entity id."""
        entities, relations = self.store.entities, self.store.relations
        query = meta["query"]
        try:
            subject, relation = entities.key(query["subject"]), relations.key(query["relation"])
        except (IndexError, KeyError):
            return None
        by_key = sim_truth.distribution(
            self.truth_source, int(meta["step"]), self.step_minutes, subject, relation
        )
        if by_key is None:
            return None
        ids = entities.ids([k for k in by_key if k in entities])
        return {int(i): by_key[entities.key(int(i))] for i in ids}

    def _publish_scorecard(self, seq: int, card: dict[str, Any]) -> None:
        window = [
            msgpack.unpackb(body, raw=False)
            for _, _, body in self.ledger.scorecards(self.scorecard_steps)
        ]
        summary = rolling(window)
        last = rolling([card])
        message = new_message(
            MessageType.SCORECARD,
            f"calibrate/scorecard/t{card['step']}",
            meta={"seq": seq, "step": card["step"], "this_step": last, "rolling": summary},
        )
        self.send(wire_parts(SCORECARD, message, self.limits))
        if self.scorecard_file is not None:
            atomic_write_text(self.scorecard_file, json.dumps(message.meta, indent=2) + "\n")
        log.info(
            "step_resolved", step=card["step"], **{k: v for k, v in last.items() if k != "steps"}
        )


def _none(_llm_artifact: str) -> None:
    """The default lookup: no calibrator but the one the stage was built with."""


def _forecast_meta(row: Recorded) -> dict[str, Any]:
    """The meta of a recorded forecast (its own header: written by this stage)."""
    header = msgpack.unpackb(row.parts[1], raw=False)
    return {**header["meta"], "id": header["id"]}


def _date(calendar: Any, t: int) -> str | None:
    try:
        when = step_date(calendar, t)
    except (TypeError, KeyError, ValueError):
        return None
    seconds = calendar.get("step_seconds", 86400)
    return when.strftime("%Y-%m-%d %H:%M UTC" if seconds < 86400 else "%Y-%m-%d")


# --------------------------------------------------------------------------- process


def ledger_path(config: Config) -> Path:
    return config.paths.run_dir / "calibrate" / config.ingest.dataset / "forecasts.sqlite"


def build_stage(config: Config, send: Send) -> CalibrateStage:
    """The served generation's calibrator; another generation's is loaded when scores of its
    llm artifact arrive."""
    saved = calibrator_artifact.load(generations.current(config).calibrator)
    store = None
    if (config.store_dir / "store.json").is_file():
        store = EventStore(config.store_dir, step_minutes=config.ingest.mapping.step_minutes)
    else:
        log.warning("no_event_store_no_evidence_no_resolution", store=str(config.store_dir))

    def find(llm: str) -> Served | None:
        for generation in generations.finished(config):
            if (generation.calibrator / calibrator_artifact.MANIFEST).is_file():
                found = calibrator_artifact.load(generation.calibrator)
                if found.manifest.get("llm_artifact") == llm:
                    log.info("calibrator_loaded", generation=generation.number, llm_artifact=llm)
                    return found.protocol("live"), found.artifact_id
        return None

    settings = config.calibrate
    return CalibrateStage(
        saved.protocol("live"),
        saved.artifact_id,
        Ledger(ledger_path(config)),
        send,
        limits_of(config),
        store,
        evidence_candidates=settings.evidence_candidates,
        evidence_facts=settings.evidence_facts,
        evidence_window=settings.evidence_window,
        scorecard_steps=settings.scorecard_steps,
        truth_source=_truth_source(config),
        step_minutes=config.ingest.mapping.step_minutes,
        scorecard_file=ledger_path(config).with_name("scorecard.json"),
        find=find,
    )


def _truth_source(config: Config) -> Path | None:
    """The simulator's output folder when ingest reads one (it holds the exact truth)."""
    source = config.ingest.source
    if source is not None and (Path(source) / sim_truth.TRUTH_DIR).is_dir():
        return Path(source)
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geopol serve calibrate", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ctx = zmq.Context.instance()
    try:
        config = load_config(args.config)
        configure_logging("calibrate", config.logging.level, config.logging.format)
        curve = Curve.of(config, "calibrate")
        check(config.calibrate.snapshot, curve)  # opened later, in its own thread
        publisher = Publisher(
            ctx, config.calibrate.publish, config.stage("calibrate").heartbeat_s, curve
        )
        stage = build_stage(config, publisher.send)
    except (
        OSError,
        ConfigError,
        StoreError,
        calibrator_artifact.CalibratorArtifactError,
        zmq.ZMQError,
    ) as exc:
        print(f"geopol serve calibrate: {exc}", file=sys.stderr)
        return 2
    snapshots = SnapshotServer(
        ctx, config.calibrate.snapshot, ledger_path(config), config.calibrate.snapshot_size, curve
    )
    snapshots.start()
    snapshots.ready.wait(5)
    stage.republish_unsent()
    try:
        return StageRuntime(
            "calibrate", config, stage.handle, tick=stage.tick, accepts=ACCEPTS, context=ctx
        ).run()
    finally:
        snapshots.stop()
        snapshots.join(2)
        publisher.close()
        stage.ledger.close()


if __name__ == "__main__":
    sys.exit(main())
