"""``geopol status``: each stage's liveness and counters, and what it left on disk.

A stage is ``up`` when its loop's heartbeat is recent, ``stale`` when the process answers but
its loop has stopped beating (a stuck handler), and ``down`` when nothing answers. Under each
stage come the files it keeps, read directly so they show even while the stage is down: for
ingest its journal (queries pending, in flight, failed and why, done; snapshots unsent), its
quarantined export files and the rows it refused, by reason; for the graph stage what its model
does not know (the ``oov`` column: queries answered with an abstention, and a line with the
fields, the snapshot facts left out and the latest step's share); for every stage its dead
letters, by reason.

Only the stages the config defines are shown. A stage that is down because what it starts from
is missing (its artifact, or ingest's source) is ``not built``, with the missing file. The exit
code, 0 only when all are up, judges the built stages with a metrics port (the one thing that
can say a stage is alive); with no stage built it is 1, since nothing can be running.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from shared import generations
from shared.config import DEFAULT_CONFIG, Config, StageConfig, load_config
from shared.file_quarantine import FileQuarantine
from shared.journal import Journal
from shared.live_state import LiveStateError, read_state, state_path
from shared.protocol import DeadLetterWriter
from shared.retrain import read_state as retrain_state
from shared.stage_inputs import missing_input

NOT_BUILT = "not-built"


@dataclass(frozen=True)
class StageStatus:
    stage: str
    state: str  # up | stale | down | no-metrics | not-built
    received: float = 0.0
    processed: float = 0.0
    rejected: float = 0.0
    heartbeat_age_s: float | None = None
    oov: float | None = None  # graph: queries unknown to its model (services.graph.oov)


def parse_metrics(text: str) -> dict[str, float]:
    """Sum each sample name over its labels (one stage per endpoint)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def classify(stage: str, cfg: StageConfig, text: str | None, now: float) -> StageStatus:
    """Turn one scrape (or its absence) into a status; pure, for tests."""
    if cfg.metrics_port is None:
        return StageStatus(stage, "no-metrics")
    if text is None:
        return StageStatus(stage, "down")
    m = parse_metrics(text)
    beat = m.get("geopol_heartbeat_timestamp_seconds")
    age = now - beat if beat else None
    state = "up" if age is not None and age <= 3 * cfg.heartbeat_s else "stale"
    return StageStatus(
        stage,
        state,
        m.get("geopol_messages_received_total", 0.0),
        m.get("geopol_messages_processed_total", 0.0),
        m.get("geopol_messages_rejected_total", 0.0),
        age,
        m.get("geopol_graph_unknown_queries_total"),
    )


def oov_line(text: str | None) -> str | None:
    """The graph stage's count of what its model does not know, from its metrics: queries by
    unknown field, snapshot facts left out, and the latest step's share; None without them."""
    if text is None:
        return None
    values = parse_metrics(text)
    fields: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "geopol_graph_unknown_query_fields_total":
                fields[sample.labels["field"]] += int(sample.value)
    if "geopol_graph_oov_step" not in values and not fields:
        return None
    by_field = f" ({_by_count(dict(fields))})" if fields else ""
    line = (
        f"unknown to the model: "
        f"{values.get('geopol_graph_unknown_queries_total', 0):.0f} queries{by_field}, "
        f"{values.get('geopol_graph_unknown_facts_total', 0):.0f} snapshot facts left out"
    )
    if "geopol_graph_oov_step" in values:
        line += (
            f"; step {values['geopol_graph_oov_step']:.0f}: "
            f"{values.get('geopol_graph_oov_step_unknown', 0):.0f} of "
            f"{values.get('geopol_graph_oov_step_queries', 0):.0f} queries"
        )
    return line


def built(status: StageStatus, missing: Path | None) -> StageStatus:
    """``status`` as ``not-built`` when the stage is down and what it starts from is missing: it
    is not expected to run, so it is no failure."""
    if missing is None or status.state != "down":
        return status
    return StageStatus(status.stage, NOT_BUILT)


def healthy(rows: list[StageStatus]) -> bool:
    """Some stage is built, and every built stage that can be judged (it has a metrics port) is
    up."""
    judged = [r for r in rows if r.state not in {"no-metrics", NOT_BUILT}]
    return any(r.state != NOT_BUILT for r in rows) and all(r.state == "up" for r in judged)


def journal_line(config: Config) -> str | None:
    """The ingest journal's items by state and the reasons items failed, or None when the
    journal was never created (opening it would create an empty one)."""
    if not config.journal_path.is_file():
        return None
    journal = Journal(config.journal_path)
    try:
        counts, reasons = journal.counts(), journal.failure_reasons()
        unsent = len(journal.unsent_snapshots())
    finally:
        journal.close()
    line = (
        f"journal {config.ingest.dataset}: {counts['pending']} pending, "
        f"{counts['in_flight']} in flight, {counts['failed']} failed, {counts['done']} done, "
        f"{unsent} snapshot(s) unsent"
    )
    return line + (f" (failed: {_by_count(reasons)})" if reasons else "")


def refused_rows_line(config: Config) -> str | None:
    """Rows of readable files that ingest kept out of the store (malformed, or for a closed
    step), by reason, or None when there are none: ``QUARANTINE_DIR/NAME.jsonl``, one row a
    line with its ``reason``."""
    files = sorted(config.quarantine_dir.glob("*.jsonl"))
    reasons: Counter[str] = Counter()
    for path in files:
        with open(path, "rb") as fh:
            reasons.update(_reason(raw) for raw in fh if raw.strip())
    if not reasons:
        return None
    return (
        f"quarantined rows: {sum(reasons.values())} in {len(files)} file(s) "
        f"({_by_count(reasons)}) in {config.quarantine_dir}"
    )


def _reason(raw: bytes) -> str:
    try:
        row = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return "unreadable_line"
    return str(row.get("reason")) if isinstance(row, dict) else "unreadable_line"


def quarantine_line(config: Config) -> str | None:
    """How many export files ingest quarantined as unreadable, or None when there are none."""
    quarantine = FileQuarantine(config.quarantine_dir)
    count = quarantine.count()
    return f"quarantined files: {count} (records in {quarantine.directory})" if count else None


def dead_letter_line(config: Config, stage: str) -> str | None:
    """The stage's dead letters by reason, or None when it has none."""
    if not config.dead_letter_dir.is_dir():  # the writer would create it
        return None
    path = config.dead_letter_dir / f"{stage}.jsonl"
    writer = DeadLetterWriter(path, stage, keep=config.protocol.dead_letter_keep)  # rotated too
    try:
        records = writer.read()
    except (OSError, ValueError) as exc:
        return f"dead letters: unreadable ({writer.path}: {exc})"
    if not records:
        return None
    reasons = Counter(str(r.get("reason")) for r in records)
    return f"dead letters: {len(records)} ({_by_count(reasons)}) in {writer.path}"


def live_line(config: Config, now: float | None = None) -> str | None:
    """What the live poller last did (shared/live_state.py), or None when this config does not
    poll and no poller left a state. Live and nothing recorded yet is said, since a poller that
    never ends a poll (never started, or stuck) is exactly what this line is for."""
    path = state_path(config)
    try:
        state = read_state(path)
    except LiveStateError as exc:
        return f"live: state unreadable ({exc})"
    if state is None:
        return None if config.ingest.live is None else f"live: no poll recorded yet ({path})"
    now = time.time() if now is None else now

    def ago(at: float | None) -> str:
        return _ago(at, now)

    outcome = {True: " (ok)", False: " (failed)", None: ""}[state.last_poll_ok]
    file = f"{state.last_file} {ago(state.last_file_at)}" if state.last_file else "none"
    error = f"{ago(state.last_error_at)}: {state.last_error}" if state.last_error else "none"
    return (
        f"live: {state.polls} poll(s), {state.failed_polls} failed, last poll "
        f"{ago(state.last_poll_at)}{outcome}, last file {file}, last error {error}"
    )


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    seconds = max(0.0, now - at)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{seconds:.0f}s ago"


def generation_lines(config: Config, now: float | None = None) -> list[str]:
    """Which generation of artifacts is served (shared/generations.py) and what the retrainer
    last did (shared/retrain.py); nothing before the first retrain, unless one is scheduled."""
    state = retrain_state(config)
    try:
        served = generations.current(config)
    except generations.GenerationError as exc:
        return [f"generation: pointer unreadable ({exc})"]
    if served.number == 0 and state is None:
        every = config.retrain.every_steps
        return [] if every is None else [f"retrain: every {every} closed steps, not run yet"]
    lines = [f"generation: {served.number} served ({served.graph})"]
    if state is not None:
        now = time.time() if now is None else now
        what = {
            "waiting": f"waiting, {state.steps_since}/{state.every_steps} steps closed since "
            "the served data",
            "building": f"building generation {state.building}",
            "failed": f"generation {state.building} failed: {state.last_error}",
        }.get(state.state, state.state)
        lines.append(f"retrain: {what} (updated {_ago(state.updated_at, now)})")
    return lines


def details(config: Config, stage: str) -> list[str]:
    """The lines shown under one stage's row."""
    found = (
        [
            journal_line(config),
            live_line(config),
            quarantine_line(config),
            refused_rows_line(config),
        ]
        if stage == "ingest"
        else []
    )
    found.append(dead_letter_line(config, stage))
    return [line for line in found if line is not None]


def _by_count(counts: dict[str, int]) -> str:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return "; ".join(f"{n} {reason}" for reason, n in ordered)


def scrape(port: int) -> str | None:
    """The stage's /metrics text on loopback, or None when nothing answers within 2 s."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geopol status", description=__doc__)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline config YAML")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    missing = {name: missing_input(config, name) for name in config.stages}
    scraped = {
        name: scrape(cfg.metrics_port) if cfg.metrics_port else None
        for name, cfg in config.stages.items()
    }
    rows = [
        built(classify(name, cfg, scraped[name], time.time()), missing[name])
        for name, cfg in config.stages.items()
    ]
    print(
        f"{'stage':<10} {'state':<10} {'received':>9} {'processed':>9} {'rejected':>9} "
        f"{'oov':>6}  heartbeat"
    )
    for r in rows:
        age = f"{r.heartbeat_age_s:.1f}s ago" if r.heartbeat_age_s is not None else "-"
        oov = f"{r.oov:.0f}" if r.oov is not None else "-"
        print(
            f"{r.stage:<10} {r.state:<10} {r.received:>9.0f} {r.processed:>9.0f} "
            f"{r.rejected:>9.0f} {oov:>6}  {age}"
        )
        if r.state == NOT_BUILT:
            print(f"  not built: {missing[r.stage]} is missing (make run builds it)")
        for line in [oov_line(scraped[r.stage]), *details(config, r.stage)]:
            if line is not None:
                print(f"  {line}")
    for line in generation_lines(config):
        print(line)
    return 0 if healthy(rows) else 1
