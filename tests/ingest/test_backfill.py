"""``geopol ingest backfill`` run as a user runs it: a process fetching a first live start's
history from a local GDELT 2.0 server that replays real export rows as consecutive slots.

What must hold (issue 12, item 2): every published slot of the window lands in the store once,
exactly as if its file were ingested by hand; a slot GDELT never published is recorded missing,
not asked for again; a rerun asks for nothing; a corrupt slot fails the run naming it, writes no
proof of a complete history, and the retry fetches that slot alone; a SIGKILL mid-download loses
and repeats nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from gdelt_http import LASTUPDATE, LIVE_MAPPING, FakeGdelt, replay_exports

from services.ingest.export_ingest import ingest_file
from services.ingest.fetch_ledger import FetchLedger
from services.ingest.mapping import MappingConfig
from shared.config import Config, load_config
from shared.event_store import EventStore
from shared.live_state import history_path

SOURCES = ("20161013151500.export.CSV", "20191024143000.export.CSV")
"""Two real 15-minute exports (../shared/data/gdelt/v2/SOURCE.md: 5,677 rows)."""
SLOTS = 12
"""Published slots ending at NEWEST; a day's window (96 slots) leaves 84 never published."""
NEWEST = datetime(2019, 10, 24, 14, 30)
TIMEOUT_S = 180.0
"""Generous: two cores shared with other test processes; a healthy run takes a few seconds."""


@pytest.fixture
def published(shared_data: Path, tmp_path: Path, gdelt: FakeGdelt) -> list[Path]:
    """The replayed slots, oldest first, served with lastupdate.txt naming the newest."""
    sources = [shared_data / "gdelt" / "v2" / name for name in SOURCES]
    paths = replay_exports(sources, tmp_path / "published", SLOTS, NEWEST)
    gdelt.publish(*paths)
    return paths


def _config(tmp_path: Path, base_url: str) -> Path:
    config = {
        "name": "backfill-test",
        "paths": {"run_dir": str(tmp_path / "run")},
        "logging": {"level": "info", "format": "json"},
        "ingest": {
            "dataset": "GDELT-LIVE",
            "live": {"base_url": base_url, "retries": 1, "backoff_s": 0.01, "bootstrap_days": 1},
            "min_free_mb": 0,
            "mapping": LIVE_MAPPING,
        },
    }
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _backfill(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "ingest", "backfill", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def _assert_store_is(config: Config, files: list[Path], tmp_path: Path) -> None:
    """The store holds exactly what ingesting ``files`` by hand, in order, into a fresh store
    gives: the same steps with the same ids (ids follow the order names first appear)."""
    expected = EventStore(tmp_path / "expected", step_minutes=15, min_free_bytes=0)
    mapping = MappingConfig(**config.ingest.mapping.model_dump())
    for path in files:
        ingest_file(path, expected, mapping, tmp_path / "expected-quarantine")
    store = EventStore(config.store_dir, step_minutes=15, min_free_bytes=0)
    assert store.steps() == expected.steps()
    assert len(expected.steps()) == SLOTS
    for step in expected.steps():
        np.testing.assert_array_equal(store.snapshot(step), expected.snapshot(step))


def _export_hits(gdelt: FakeGdelt) -> dict[str, int]:
    return {p: n for p, n in gdelt.hits.items() if not p.endswith(LASTUPDATE)}


def test_backfill_fetches_the_window_once_and_a_rerun_asks_for_nothing(
    gdelt: FakeGdelt, published: list[Path], tmp_path: Path
):
    config_path = _config(tmp_path, gdelt.url)
    config = load_config(config_path)

    first = _backfill(config_path, "--days", "1")

    assert first.returncode == 0, first.stderr
    _assert_store_is(config, published, tmp_path)
    hits = _export_hits(gdelt)
    assert len(hits) == 96 and set(hits.values()) == {1}, hits  # each slot asked for once
    ledger = FetchLedger(config.fetch_ledger_path)
    states = ledger.states_between("00000000000000", "99999999999999")
    assert sorted(n for n, s in states.items() if s == "ingested") == [p.name for p in published]
    assert sum(s == "missing" for s in states.values()) == 96 - SLOTS
    record = json.loads(history_path(config).read_text())
    assert (record["slots"], record["fetched_now"], record["held"]) == (96, SLOTS, SLOTS)
    assert (record["missing"], record["failed"]) == (96 - SLOTS, 0)
    assert record["newest"] == published[-1].name

    gdelt.hits.clear()
    again = _backfill(config_path)  # --days from ingest.live.bootstrap_days

    assert again.returncode == 0, again.stderr
    assert _export_hits(gdelt) == {}
    assert "0 fetched now" in again.stdout, again.stdout
    _assert_store_is(config, published, tmp_path)


def test_a_corrupt_slot_fails_the_history_and_the_retry_fetches_only_it(
    gdelt: FakeGdelt, published: list[Path], tmp_path: Path
):
    config_path = _config(tmp_path, gdelt.url)
    config = load_config(config_path)
    bad = published[4]
    body = bad.read_bytes()
    torn = body[: len(body) // 2] + bytes(len(body) - len(body) // 2)  # same size, broken zip
    gdelt.files[gdelt.path_of(bad)] = torn

    failed = _backfill(config_path)

    assert failed.returncode == 1, failed.stderr
    assert bad.name.split(".")[0] in failed.stderr, failed.stderr
    assert "history is incomplete" in failed.stderr
    assert not history_path(config).exists()
    assert FetchLedger(config.fetch_ledger_path).state(bad.name) is None
    store = EventStore(config.store_dir, step_minutes=15, min_free_bytes=0)
    assert len(store.steps()) == 4  # the slots before the bad one; the later ones wait

    gdelt.files[gdelt.path_of(bad)] = body
    gdelt.hits.clear()
    retried = _backfill(config_path)

    assert retried.returncode == 0, retried.stderr
    assert _export_hits(gdelt) == {gdelt.path_of(bad): 1}
    _assert_store_is(config, published, tmp_path)
    assert history_path(config).exists()


def test_a_sigkill_mid_download_resumes_without_a_loss_or_a_repeat(
    gdelt: FakeGdelt, published: list[Path], tmp_path: Path
):
    config_path = _config(tmp_path, gdelt.url)
    config = load_config(config_path)
    slow = gdelt.path_of(published[6])
    gdelt.slow.add(slow)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "ingest", "backfill", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert gdelt.wait_for_hit(slow, timeout_s=TIMEOUT_S), "never asked for the slow slot"
        time.sleep(0.3)  # inside the body now
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not history_path(config).exists()
    before = dict(_export_hits(gdelt))

    gdelt.slow.clear()
    gdelt.hits.clear()
    resumed = _backfill(config_path)

    assert resumed.returncode == 0, resumed.stderr
    _assert_store_is(config, published, tmp_path)
    again = _export_hits(gdelt)
    assert set(again) & {p for p in before if p != slow} == set(), again  # only the torn one
    assert slow in again
    assert len(before) + len(again) - 1 == 96
