"""`geopol status`: classification from real metrics text, and the command as a process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from prometheus_client import generate_latest

from shared.config import StageConfig
from shared.file_quarantine import FileQuarantine
from shared.journal import Journal, WorkItem
from shared.metrics import StageMetrics
from shared.protocol import DeadLetterWriter
from shared.protocol.errors import DtypeError, NonFiniteError
from shared.status import built, classify, healthy


def _text(metrics: StageMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_up_stale_down_and_counts():
    m = StageMetrics("graph")
    m.received()
    m.received()
    m.processed(0.01)
    m.rejected("non_finite")
    m.heartbeat()
    cfg = StageConfig(metrics_port=9999, heartbeat_s=1.0)
    text = _text(m)
    now = m.registry.get_sample_value("geopol_heartbeat_timestamp_seconds", {"stage": "graph"})
    up = classify("graph", cfg, text, now + 0.5)
    assert (up.state, up.received, up.processed, up.rejected) == ("up", 2, 1, 1)
    assert classify("graph", cfg, text, now + 10).state == "stale"
    assert classify("graph", cfg, None, now).state == "down"
    assert classify("graph", StageConfig(), None, now).state == "no-metrics"
    unjudged = classify("llm", StageConfig(), None, now)  # nothing can say it is alive
    assert healthy([up, unjudged]) and not healthy([up, classify("graph", cfg, None, now)])
    unbuilt = built(classify("llm", cfg, None, now), Path("llm/manifest.json"))
    assert unbuilt.state == "not-built" and healthy([up, unbuilt])
    assert built(up, Path("llm/manifest.json")) == up  # it runs, so it is judged
    assert not healthy([unbuilt])  # nothing is built, so nothing can be running


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_status_shows_the_journal_quarantine_and_dead_letters_of_the_configured_stages(tmp_path):
    """`geopol status` as a process: per stage its backlog and dead letters by reason, and an
    exit code that judges only the stages this config runs."""
    run_dir = tmp_path / "run"
    journal = Journal(run_dir / "journal" / "SIM.sqlite")
    journal.add(WorkItem(f"q{i}", 5, {}) for i in range(6))
    journal.mark_sent(["q0", "q1", "q2", "q3"], 0.0)
    journal.mark_done("q0")
    journal.fail("q1", "cannot be sent: header too large")
    journal.close_step(4)  # its snapshot still to send
    journal.close()
    letters = run_dir / "deadletter"
    for stage, reason in [("graph", "non_finite"), ("graph", "non_finite"), ("graph", "dtype")]:
        error = {"non_finite": NonFiniteError, "dtype": DtypeError}[reason]("bad frame")
        rotating = DeadLetterWriter(letters / f"{stage}.jsonl", stage, max_bytes=1)
        rotating.write(error, [b"x"])  # each record rotates the one before into graph.jsonl.N
    DeadLetterWriter(letters / "relay.jsonl", "relay").write(DtypeError("old test"), [b"x"])
    export = run_dir / "src" / "notes.csv"
    export.parent.mkdir()
    export.write_text("a,b\n1,2\n")
    FileQuarantine(run_dir / "quarantine" / "SIM").add(export, ValueError("not GDELT"))
    refused = {
        "a.export.CSV.zip": ["bad_date", "bad_date", "empty_actors"],
        "b.zip": ["step_closed"],
    }
    for name, reasons in refused.items():  # the row files export_ingest writes
        rows = "".join(json.dumps({"source": name, "reason": r}) + "\n" for r in reasons)
        (run_dir / "quarantine" / "SIM" / f"{name}.jsonl").write_text(rows)
    metrics = StageMetrics("ingest")
    metrics.heartbeat()
    ingest_port = _free_port()
    server = metrics.serve(ingest_port)
    stages = {"ingest": {"metrics_port": ingest_port, "heartbeat_s": 60.0}}
    config = tmp_path / "status.yaml"
    try:
        config.write_text(
            yaml.safe_dump({"name": "s", "paths": {"run_dir": str(run_dir)}, "stages": stages})
        )
        alone = _status(config)
        stages["graph"] = {"metrics_port": _free_port()}  # nothing listens there
        config.write_text(
            yaml.safe_dump({"name": "s", "paths": {"run_dir": str(run_dir)}, "stages": stages})
        )
        unbuilt = _status(config)  # no graph artifact: not expected to run
        manifest = run_dir / "artifacts" / "regcn" / "SIM" / "manifest.json"
        manifest.parent.mkdir(parents=True)
        manifest.write_text("{}")
        both = _status(config)  # built, so down is a failure
    finally:
        server.shutdown()
    assert alone.returncode == 0, alone.stdout + alone.stderr  # ingest is up; nothing else runs
    assert (
        "journal SIM: 2 pending, 2 in flight, 1 failed, 1 done, 1 snapshot(s) unsent"
        in alone.stdout
    )
    assert "(failed: 1 cannot be sent: header too large)" in alone.stdout
    assert "quarantined files: 1" in alone.stdout
    assert (
        "quarantined rows: 4 in 2 file(s) (2 bad_date; 1 empty_actors; 1 step_closed)"
        in alone.stdout
    )
    assert "graph" not in alone.stdout and "relay" not in alone.stdout
    assert unbuilt.returncode == 0, unbuilt.stdout + unbuilt.stderr
    (graph_row,) = [line for line in unbuilt.stdout.splitlines() if line.startswith("graph")]
    assert graph_row.split()[1] == "not-built"
    assert f"not built: {manifest} is missing" in unbuilt.stdout
    assert both.returncode == 1
    (graph_row,) = [line for line in both.stdout.splitlines() if line.startswith("graph")]
    assert graph_row.split()[1] == "down"
    assert "dead letters: 3 (2 non_finite; 1 dtype)" in both.stdout
    assert "relay" not in both.stdout


def test_status_shows_what_the_graph_model_does_not_know(tmp_path):
    """The graph's ``oov`` column and line, from the counters its stage serves (a process)."""
    from services.graph.oov import OovCounter

    run_dir = tmp_path / "run"
    manifest = run_dir / "artifacts" / "regcn" / "SIM" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    metrics = StageMetrics("graph")
    metrics.heartbeat()
    oov = OovCounter(metrics.registry)
    for step, unknown in [(7, []), (7, ["subject"]), (8, []), (8, ["subject", "relation"])]:
        oov.query(step, unknown)
    oov.facts(np.array([[0, 0, 1], [50, 0, 1], [0, 9, 1]]), num_entities=10, num_relations=5)
    port = _free_port()
    server = metrics.serve(port)
    config = tmp_path / "status.yaml"
    stages = {"graph": {"metrics_port": port, "heartbeat_s": 60.0}}
    config.write_text(
        yaml.safe_dump({"name": "s", "paths": {"run_dir": str(run_dir)}, "stages": stages})
    )
    try:
        done = _status(config)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stdout + done.stderr
    header, graph_row = done.stdout.splitlines()[:2]
    assert header.split()[5] == "oov" and graph_row.split()[5] == "2"
    assert (
        "unknown to the model: 2 queries (2 subject; 1 relation), 2 snapshot facts left out; "
        "step 8: 1 of 2 queries" in done.stdout
    )
