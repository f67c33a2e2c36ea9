"""``geopol serve ingest`` with ``ingest.live`` set, run as a user runs it: a process polling a
local GDELT 2.0 server on 127.0.0.1 that serves a real export with its ``lastupdate.txt``.

Issue 12 found the entry point never started the poller while tests/ingest/test_live.py, which
drives ``IngestStage.start_live`` itself, passed. This test goes through ``shared.cli`` and the
config file only, so it fails if ``main`` forgets the poller, the poller its state, or SIGTERM
its thread.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
import zmq
from gdelt_http import LASTUPDATE, LIVE_MAPPING, FakeGdelt, replay_exports

from services.ingest.export_ingest import ingest_file
from services.ingest.mapping import MappingConfig
from shared.config import Config, load_config
from shared.event_store import EventStore
from shared.journal import Journal
from shared.protocol import Message, MessageType, decode

EXPORT = "20191024143000.export.CSV"
"""A real 15-minute GDELT 2.0 export (../shared/data/gdelt/v2/SOURCE.md: 2,111 rows, one slot)."""
SLOW = "20191024144500.export.CSV.zip"
"""The next slot, which the server trickles so that SIGTERM arrives mid-download."""
STARTUP_S = 60.0
"""Generous: two cores shared with other test processes; a healthy run takes a few seconds."""
PROMPT_STOP_S = 5.0
"""SIGTERM to exit; the poller stops within one socket read, the loop within one poll."""


@pytest.fixture
def export_zip(shared_data: Path, tmp_path: Path) -> Path:
    """The team's export zipped as GDELT publishes it (``NAME.export.CSV.zip``)."""
    path = tmp_path / "published" / f"{EXPORT}.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(shared_data / "gdelt" / "v2" / EXPORT, EXPORT)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_config(tmp_path: Path, base_url: str) -> tuple[Path, str, int]:
    """A live config on ipc sockets in the run dir; its path, queries endpoint, metrics port."""
    queries = f"ipc://{tmp_path}/run/queries.sock"
    port = _free_port()
    config = {
        "name": "serve-live-test",
        "paths": {"run_dir": str(tmp_path / "run")},
        "logging": {"level": "info", "format": "json"},
        "ingest": {
            "dataset": "GDELT-LIVE",
            "live": {"base_url": base_url, "interval_s": 0.2},
            "min_free_mb": 0,
            "queries_per_step": 5,
            "mapping": LIVE_MAPPING,
        },
        "stages": {
            "ingest": {
                "heartbeat_s": 0.2,
                "metrics_port": port,
                "sockets": {
                    "queries": {"pattern": "push", "endpoint": queries, "bind": True},
                    "done": {
                        "pattern": "pull",
                        "endpoint": f"ipc://{tmp_path}/run/done.sock",
                        "bind": True,
                    },
                },
            }
        },
    }
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, queries, port


def _geopol(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _expected(export: Path, config: Config, tmp_path: Path) -> EventStore:
    """What the export must become: the same file ingested in process into a fresh store."""
    store = EventStore(tmp_path / "expected", step_minutes=15, min_free_bytes=0)
    mapping = MappingConfig(**config.ingest.mapping.model_dump())
    ingest_file(export, store, mapping, tmp_path / "expected-quarantine")
    return store


def _events(stderr: str) -> list[str]:
    """The structlog events of a JSON log, in order (other lines, e.g. a traceback, skipped)."""
    found = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "event" in record:
            found.append(record["event"])
    return found


def test_serve_ingest_polls_live_gdelt_closes_the_step_reports_and_stops_on_sigterm(
    gdelt: FakeGdelt, export_zip: Path, tmp_path: Path
):
    gdelt.publish(export_zip)
    config_path, queries_endpoint, metrics_port = _write_config(tmp_path, gdelt.url)
    config = load_config(config_path)
    expected = _expected(export_zip, config, tmp_path)
    [step] = expected.steps()
    ctx = zmq.Context()
    queries = ctx.socket(zmq.PULL)
    queries.connect(queries_endpoint)
    proc = _geopol("serve", "ingest", "--config", str(config_path))

    def fail(what: str) -> None:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"{what}; server hits {dict(gdelt.hits)}; serve ingest said:\n{err}")

    try:
        if not queries.poll(STARTUP_S * 1000):
            fail("no snapshot from a live export")
        snapshot: Message = decode(queries.recv_multipart())
        assert snapshot.type == MessageType.SNAPSHOT
        assert snapshot.meta["step"] == step
        np.testing.assert_array_equal(snapshot.frames[0], expected.snapshot(step))
        assert gdelt.hits[gdelt.path_of(LASTUPDATE)] >= 1
        assert gdelt.hits[gdelt.path_of(export_zip)] == 1

        status = subprocess.run(
            [sys.executable, "-m", "shared.cli", "status", "--config", str(config_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        [live] = [line for line in status.stdout.splitlines() if line.strip().startswith("live:")]
        assert f"last file {export_zip.name} " in live and "(ok)" in live, live
        assert "last error none" in live, live
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'geopol_live_last_file_timestamp_seconds{stage="ingest"}' in metrics

        slow = tmp_path / "published" / SLOW
        slow.write_bytes(bytes(range(256)) * 64)  # the trickle takes minutes over it
        gdelt.slow.add(gdelt.path_of(slow))
        gdelt.publish(slow)
        if not gdelt.wait_for_hit(gdelt.path_of(slow), timeout_s=STARTUP_S):
            fail("the poller never asked for the next slot")
        time.sleep(0.3)  # inside the body now
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        queries.close(linger=0)
        ctx.term()

    assert proc.returncode == 0, err
    assert took < PROMPT_STOP_S, f"SIGTERM took {took:.1f}s\n{err}"
    events = _events(err)
    assert "live_stopped" in events and "live_stop_timeout" not in events, err
    assert sorted(p.name for p in config.download_dir.iterdir()) == [export_zip.name]
    store = EventStore(config.store_dir, step_minutes=15, min_free_bytes=0)
    assert store.steps() == [step]
    assert store.scan().height == expected.scan().height > 0
    journal = Journal(config.journal_path)
    try:
        assert journal.closed_steps() == {step}
        assert journal.unsent_snapshots() == []
    finally:
        journal.close()


SOURCES = ("20161013151500.export.CSV", EXPORT)
"""Both real GDELT 2.0 exports of the team data, re-published as consecutive live slots."""
KILLED_SLOTS = 3


def _committed(store_dir: Path) -> list[str]:
    """The source sha256 of every committed ingest, in order (the store's commit log)."""
    log = store_dir / "ingested.jsonl"
    if not log.exists():
        return []
    return [json.loads(line)["sha256"] for line in log.read_text().splitlines() if line]


def _kill_when(
    proc: subprocess.Popen, ready, timeout_s: float, poll_s: float, delay_s: float = 0.0
) -> bool:
    """SIGKILL ``proc`` ``delay_s`` after ``ready()`` holds (True), or after ``timeout_s``
    (False)."""
    deadline = time.monotonic() + timeout_s
    seen = False
    while not seen and time.monotonic() < deadline and proc.poll() is None:
        seen = ready()
        if not seen:
            time.sleep(poll_s)
    time.sleep(delay_s if seen else 0.0)
    proc.kill()
    proc.wait(30)
    return seen


def test_every_live_export_is_ingested_once_across_sigkills_mid_download_and_mid_ingest(
    gdelt: FakeGdelt, shared_data: Path, tmp_path: Path
):
    """Issue 12's target, as a deployment meets it: each slot's download is killed halfway (the
    server trickles it), then the restarted stage is killed the moment the store starts writing
    the slot (its pending.json exists), then a third start finishes. Every slot must end up in
    the store once, and the store must hold what ingesting the slots in process gives."""
    sources = [shared_data / "gdelt" / "v2" / name for name in SOURCES]
    newest = datetime(2019, 10, 24, 15, 0)
    slots = replay_exports(sources, tmp_path / "published", KILLED_SLOTS, newest)
    config_path, _, _ = _write_config(tmp_path, gdelt.url)
    config = load_config(config_path)
    expected = EventStore(tmp_path / "expected", step_minutes=15, min_free_bytes=0)
    mapping = MappingConfig(**config.ingest.mapping.model_dump())
    store_dir = config.store_dir
    landed_mid_ingest = 0
    for k, slot in enumerate(slots):
        ingest_file(slot, expected, mapping, tmp_path / "expected-quarantine")
        path = gdelt.path_of(slot)
        gdelt.slow.add(path)
        gdelt.publish(*slots[: k + 1])
        hits = gdelt.hits[path]
        proc = _geopol("serve", "ingest", "--config", str(config_path))
        assert _kill_when(
            proc, lambda path=path, hits=hits: gdelt.hits[path] > hits, STARTUP_S, 0.05, 0.3
        ), proc.stderr  # killed 0.3 s into the trickled body
        assert len(_committed(store_dir)) == k  # nothing of the cut download is in the store

        gdelt.slow.discard(path)
        proc = _geopol("serve", "ingest", "--config", str(config_path))
        pending = store_dir / "pending.json"
        landed_mid_ingest += (
            _kill_when(
                proc,
                lambda k=k, pending=pending: pending.exists() or len(_committed(store_dir)) > k,
                STARTUP_S,
                0.001,
            )
            and len(_committed(store_dir)) == k
        )

        proc = _geopol("serve", "ingest", "--config", str(config_path))
        try:
            deadline = time.monotonic() + STARTUP_S
            while len(_committed(store_dir)) <= k and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        assert len(_committed(store_dir)) == k + 1, err

    committed = _committed(store_dir)
    assert len(committed) == len(set(committed)) == KILLED_SLOTS  # each slot once
    store = EventStore(store_dir, step_minutes=15, min_free_bytes=0)
    assert store.steps() == expected.steps() and len(store.steps()) == KILLED_SLOTS
    for step in expected.steps():
        np.testing.assert_array_equal(store.snapshot(step), expected.snapshot(step))
    assert store.scan().height == expected.scan().height > 0
    assert not (store_dir / "pending.json").exists()
    assert landed_mid_ingest >= 1  # at least one kill hit the store mid-write
