"""Live GDELT 2.0 polling against a local HTTP server; nothing here touches the internet."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from gdelt_http import FakeGdelt
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from services.ingest.export_ingest import ingest_file
from services.ingest.fetch_ledger import LedgerError
from services.ingest.live import (
    LASTUPDATE,
    LastUpdateError,
    LivePoller,
    RemoteFile,
    Stopped,
    parse_lastupdate,
    run_live,
)
from services.ingest.live_report import LiveReporter
from services.ingest.mapping import MappingConfig
from services.ingest.simulator import WorldParams, simulate
from shared.event_store import EventStore
from shared.live_state import LiveState, read_state

START = datetime(2024, 1, 1, tzinfo=UTC)
SIM_MAPPING = MappingConfig(relation_level="root", time_field="dateadded", step_minutes=15)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> list[Path]:
    """Three consecutive simulated slots as GDELT ships them (.export.CSV.zip)."""
    out = tmp_path_factory.mktemp("sim")
    simulate(out, WorldParams(seed=5, events_per_step=15), steps=3, start=START, zipped=True)
    return sorted(out.glob("*.export.CSV.zip"))


def make_poller(base: str, tmp_path: Path, **kwargs: object) -> LivePoller:
    options = {"timeout_s": 5, "retries": 2, "backoff_s": 0.01, **kwargs}
    return LivePoller(base, tmp_path / "downloads", tmp_path / "ledger.sqlite", **options)


# --------------------------------------------------------------------------- parse_lastupdate


def test_parse_lastupdate_reads_the_three_lines():
    text = (
        "152744 0B5E3B2C0C3F1A5F0B5E3B2C0C3F1A5F "
        "http://data.gdeltproject.org/gdeltv2/20161013151500.export.CSV.zip\n"
        f"1 {'c' * 32} http://data.gdeltproject.org/gdeltv2/20161013151500.mentions.CSV.zip\n\n"
        f"2 {'d' * 32} http://data.gdeltproject.org/gdeltv2/20161013151500.gkg.csv.zip\n"
    )
    files = parse_lastupdate(text)
    assert files[0] == RemoteFile(
        size=152744,
        md5="0b5e3b2c0c3f1a5f0b5e3b2c0c3f1a5f",
        url="http://data.gdeltproject.org/gdeltv2/20161013151500.export.CSV.zip",
    )
    assert files[0].name == "20161013151500.export.CSV.zip"
    assert [f.size for f in files] == [152744, 1, 2]


@pytest.mark.parametrize(
    "bad",
    [
        "12 http://x/20161013151500.export.CSV.zip",
        "twelve aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa http://x/a.zip",
        "12 not-an-md5 http://x/a.zip",
        f"12 {'a' * 32} ftp://x/a.zip",
    ],
)
def test_parse_lastupdate_names_the_malformed_line(bad):
    good = f"1 {'a' * 32} http://x/20161013151500.export.CSV.zip"
    with pytest.raises(LastUpdateError, match=r"line 2: .*") as info:
        parse_lastupdate(f"{good}\n{bad}\n")
    assert bad.split()[-1] in str(info.value)


# --------------------------------------------------------------------------- poll_once


def test_fetch_verifies_records_and_does_not_fetch_twice(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    poller = make_poller(gdelt.url, tmp_path)
    got = poller.poll_once()
    assert got == [tmp_path / "downloads" / exports[0].name]
    assert got[0].read_bytes() == exports[0].read_bytes()
    assert poller.ledger.state(exports[0].name) == "fetched"
    assert poller.pending() == got
    poller.mark_ingested(exports[0].name)
    assert poller.ledger.state(exports[0].name) == "ingested"
    assert poller.pending() == []
    assert poller.poll_once() == []
    assert gdelt.hits[gdelt.path_of(exports[0])] == 1
    assert gdelt.hits[gdelt.path_of(LASTUPDATE)] == 2
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == [exports[0].name]


def test_md5_mismatch_is_rejected_then_retried_until_good(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    path = gdelt.path_of(exports[0])
    body = exports[0].read_bytes()
    gdelt.once[path] = [bytes(reversed(body))]  # same size, wrong bytes, served once
    poller = make_poller(gdelt.url, tmp_path)
    with capture_logs() as logs:
        got = poller.poll_once()
    assert gdelt.hits[path] == 2
    assert got[0].read_bytes() == body
    rejected = [e for e in logs if e["event"] == "download_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["check"] == "md5"
    assert rejected[0]["expected"] == hashlib.md5(body).hexdigest()
    assert rejected[0]["actual"] == hashlib.md5(bytes(reversed(body))).hexdigest()
    assert poller.ledger.state(exports[0].name) == "fetched"


def test_persistent_corruption_is_given_up_unrecorded_and_retried_next_poll(
    gdelt, exports, tmp_path
):
    gdelt.publish(exports[0])
    path = gdelt.path_of(exports[0])
    gdelt.once[path] = [b"x" * 10] * 3  # size mismatch on every attempt of the first poll
    poller = make_poller(gdelt.url, tmp_path, retries=2)
    with capture_logs() as logs:
        assert poller.poll_once() == []
    assert gdelt.hits[path] == 3
    assert [e["check"] for e in logs if e["event"] == "download_rejected"] == ["size"] * 3
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["download_given_up"]
    assert list((tmp_path / "downloads").iterdir()) == []  # no temp file left behind
    assert poller.ledger.state(exports[0].name) is None
    assert poller.poll_once() == [tmp_path / "downloads" / exports[0].name]
    assert gdelt.hits[path] == 4


def test_server_error_is_retried_within_the_poll(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    gdelt.once[gdelt.path_of(exports[0])] = [503]
    assert len(make_poller(gdelt.url, tmp_path).poll_once()) == 1
    assert gdelt.hits[gdelt.path_of(exports[0])] == 2


def test_lastupdate_without_export_line_is_an_error(gdelt, tmp_path):
    gdelt.files[gdelt.path_of(LASTUPDATE)] = f"1 {'a' * 32} {gdelt.url}/x.gkg.csv.zip\n".encode()
    with pytest.raises(LastUpdateError, match="export"):
        make_poller(gdelt.url, tmp_path).poll_once()


# --------------------------------------------------------------------------- restart


def test_restart_neither_refetches_nor_loses_an_uningested_file(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    first = make_poller(gdelt.url, tmp_path)
    [path] = first.poll_once()
    # crash here: fetched, never ingested
    second = make_poller(gdelt.url, tmp_path)
    assert second.pending() == [path]
    assert second.poll_once() == []
    assert gdelt.hits[gdelt.path_of(exports[0])] == 1
    second.mark_ingested(path.name)
    assert make_poller(gdelt.url, tmp_path).pending() == []


def test_pending_file_that_vanished_is_fetched_again(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    poller = make_poller(gdelt.url, tmp_path)
    [path] = poller.poll_once()
    path.unlink()
    assert poller.pending() == []
    assert poller.poll_once() == [path]
    assert path.exists()


def test_mark_ingested_of_an_unknown_file_is_an_error(tmp_path):
    with pytest.raises(LedgerError, match="not fetched"):
        make_poller("http://127.0.0.1:9", tmp_path).mark_ingested("20240101000000.export.CSV.zip")


# --------------------------------------------------------------------------- gaps


def test_partial_download_left_by_a_killed_process_is_removed_at_start(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    left = downloads / ".20240101000000.export.CSV.zip.abc123.part"
    left.write_bytes(b"half a zip")
    kept = downloads / "20240101000000.export.CSV.zip"
    kept.write_bytes(b"verified earlier")
    make_poller("http://127.0.0.1:9", tmp_path)
    assert sorted(p.name for p in downloads.iterdir()) == [kept.name]


# --------------------------------------------------------------------------- stopping


def start_slow_download(gdelt: FakeGdelt, tmp_path: Path) -> tuple[Path, LivePoller]:
    """Publish a body the server trickles for minutes; a poller that fetches it."""
    slow = tmp_path / "slow" / "20240101001500.export.CSV.zip"
    slow.parent.mkdir()
    slow.write_bytes(bytes(range(256)) * 64)  # 16 KiB: over 50 s at the trickle rate
    gdelt.publish(slow)
    gdelt.slow.add(gdelt.path_of(slow))
    return slow, make_poller(gdelt.url, tmp_path, stop=threading.Event())


def test_stop_interrupts_a_slow_download_and_leaves_no_temp_file(gdelt, tmp_path):
    """A SIGTERM must not wait for a download a slow server stretches over minutes."""
    slow, poller = start_slow_download(gdelt, tmp_path)
    outcome: list[BaseException | None] = []

    def poll() -> None:
        try:
            poller.poll_once()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=poll)
    thread.start()
    assert gdelt.wait_for_hit(gdelt.path_of(slow), timeout_s=10)
    time.sleep(0.2)  # well inside the body
    stopped_at = time.monotonic()
    poller.stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - stopped_at < 1.0
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped)
    assert list((tmp_path / "downloads").iterdir()) == []
    assert poller.ledger.state(slow.name) is None  # fetched next time, not lost


def test_stop_interrupts_the_backoff_between_retries(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    gdelt.once[gdelt.path_of(exports[0])] = [503] * 5
    stop = threading.Event()
    poller = make_poller(gdelt.url, tmp_path, retries=3, backoff_s=30, stop=stop)
    thread = threading.Thread(
        target=run_live, args=(poller, lambda _p: None), kwargs={"stop": stop}
    )
    thread.start()
    assert gdelt.wait_for_hit(gdelt.path_of(exports[0]), timeout_s=10)
    time.sleep(0.1)  # in the first 30 s backoff now
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert gdelt.hits[gdelt.path_of(exports[0])] == 1


# --------------------------------------------------------------------------- state


def test_run_live_reports_polls_files_and_errors_and_carries_them_forward(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    poller = make_poller(gdelt.url, tmp_path, retries=0)
    stop = threading.Event()
    reports: list[LiveState] = []

    def between() -> None:  # poll 2: the export is corrupt; poll 3: lastupdate is gone
        if len(reports) == 0:
            gdelt.publish(exports[0], exports[1])
            gdelt.once[gdelt.path_of(exports[1])] = [b"x"]
        else:
            gdelt.once[gdelt.path_of(LASTUPDATE)] = [404]

    stop_after_polls(poller, stop, polls=3, between=between)
    run_live(poller, lambda _p: None, interval_s=0, stop=stop, report=reports.append)

    assert [r.polls for r in reports] == [1, 2, 3]
    assert [r.last_poll_ok for r in reports] == [True, True, False]
    assert [r.failed_polls for r in reports] == [0, 0, 1]
    assert {r.last_file for r in reports} == {exports[0].name}  # the corrupt one never arrived
    assert reports[0].last_error is None
    assert reports[1].last_error is not None
    assert reports[1].last_error.startswith(f"{exports[1].name}: given up after 1 attempts")
    assert "size mismatch" in reports[1].last_error
    assert reports[2].last_error.startswith("HTTPError: HTTP Error 404")
    assert reports[0].last_poll_at <= reports[1].last_poll_at <= reports[2].last_poll_at
    assert all(r.url == poller.lastupdate_url for r in reports)

    stop = threading.Event()
    stop_after_polls(poller, stop, polls=1)
    later: list[LiveState] = []
    run_live(
        poller, lambda _p: None, interval_s=0, stop=stop, report=later.append, state=reports[-1]
    )
    assert (later[0].polls, later[0].failed_polls) == (4, 1)  # counted on from the last state
    assert later[0].last_file == exports[1].name  # it is served whole now
    assert later[0].last_error == reports[2].last_error  # kept, so a person still sees it


def test_a_failing_report_does_not_stop_the_feed(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    poller = make_poller(gdelt.url, tmp_path)
    stop = threading.Event()
    stop_after_polls(poller, stop, polls=2)

    def full_disk(_state: LiveState) -> None:
        raise OSError(28, "No space left on device")

    with capture_logs() as logs:
        run_live(poller, lambda _p: None, interval_s=0, stop=stop, report=full_disk)
    assert [e["event"] for e in logs].count("live_report_failed") == 2
    assert poller.ledger.state(exports[0].name) == "ingested"


def test_reporter_writes_the_state_sets_gauges_and_resumes_from_the_file(tmp_path):
    path = tmp_path / "live" / "LIVE.json"
    registry = CollectorRegistry()
    reporter = LiveReporter(path, registry)
    fresh = reporter.previous("http://a/lastupdate.txt")
    assert fresh == LiveState(url="http://a/lastupdate.txt")
    state = fresh.after_poll(1_000.0, ["20240101000000.export.CSV.zip"], [])
    state = state.after_failed_poll(1_060.0, "URLError: refused")
    reporter.report(state)
    assert read_state(path) == state

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(f"geopol_live_{name}", {"stage": "ingest"})

    assert gauge("polls") == 2 and gauge("failed_polls") == 1
    assert gauge("last_poll_timestamp_seconds") == 1_060.0
    assert gauge("last_file_timestamp_seconds") == 1_000.0
    assert gauge("last_error_timestamp_seconds") == 1_060.0
    moved = LiveReporter(path).previous("http://b/lastupdate.txt")  # base_url changed
    assert moved.polls == 2 and moved.url == "http://b/lastupdate.txt"
    path.write_text("{not json")
    assert LiveReporter(path).previous("http://a/lastupdate.txt").polls == 0


def test_gap_is_skipped_without_backfill(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    poller = make_poller(gdelt.url, tmp_path)
    poller.poll_once()
    gdelt.publish(*exports)
    assert [p.name for p in poller.poll_once()] == [exports[2].name]
    assert gdelt.hits[gdelt.path_of(exports[1])] == 0


def test_backfill_fetches_missed_slots_checked_as_zip(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    poller = make_poller(gdelt.url, tmp_path, backfill=True)
    poller.poll_once()
    gdelt.publish(*exports)
    assert [p.name for p in poller.poll_once()] == [exports[1].name, exports[2].name]
    assert poller.ledger.state(exports[1].name) == "fetched"
    assert poller.poll_once() == []
    assert gdelt.hits[gdelt.path_of(exports[1])] == 1


def test_backfill_rejects_a_corrupt_zip_and_retries_it_next_poll(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    poller = make_poller(gdelt.url, tmp_path, backfill=True, retries=0)
    poller.poll_once()
    gdelt.publish(*exports)
    body = bytearray(exports[1].read_bytes())
    body[40] ^= 0xFF  # flip a byte of the compressed data: the CRC check must notice
    gdelt.once[gdelt.path_of(exports[1])] = [bytes(body)]
    with capture_logs() as logs:
        assert [p.name for p in poller.poll_once()] == [exports[2].name]
    assert any(e["event"] == "download_rejected" and e["check"] == "zip" for e in logs)
    assert poller.ledger.state(exports[1].name) is None
    assert [p.name for p in poller.poll_once()] == [exports[1].name]


def test_backfill_marks_an_unpublished_slot_missing(gdelt, exports, tmp_path):
    gdelt.publish(exports[0])
    poller = make_poller(gdelt.url, tmp_path, backfill=True)
    poller.poll_once()
    gdelt.publish(exports[0], exports[2])  # slot 1 was never published: 404
    assert [p.name for p in poller.poll_once()] == [exports[2].name]
    assert poller.ledger.state(exports[1].name) == "missing"
    assert poller.poll_once() == []
    assert gdelt.hits[gdelt.path_of(exports[1])] == 1


# --------------------------------------------------------------------------- run_live


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_after_polls(
    poller: LivePoller,
    stop: threading.Event,
    polls: int,
    between: Callable[[], None] | None = None,
) -> None:
    """Make ``poller.poll_once`` set ``stop`` after ``polls`` calls (and run ``between``)."""
    original = poller.poll_once
    count = [0]

    def poll_once() -> list[Path]:
        try:
            return original()
        finally:
            count[0] += 1
            if count[0] >= polls:
                stop.set()
            elif between is not None:
                between()

    poller.poll_once = poll_once  # type: ignore[method-assign]


def test_run_live_survives_a_server_that_is_down(tmp_path):
    poller = make_poller(f"http://127.0.0.1:{closed_port()}/gdeltv2", tmp_path, timeout_s=1)
    stop = threading.Event()
    stop_after_polls(poller, stop, polls=2)
    with capture_logs() as logs:
        run_live(poller, lambda path: None, interval_s=0, stop=stop)
    failures = [e for e in logs if e["event"] == "poll_failed"]
    assert len(failures) == 2
    assert failures[0]["error_type"] == "URLError"


def test_run_live_ingests_into_the_store_and_a_rerun_adds_nothing(gdelt, exports, tmp_path):
    store = EventStore(tmp_path / "store", step_minutes=15, min_free_bytes=0)

    def ingest(path: Path) -> object:
        return ingest_file(path, store, SIM_MAPPING, tmp_path / "quarantine")

    gdelt.publish(exports[0])
    poller = make_poller(gdelt.url, tmp_path)
    stop = threading.Event()
    stop_after_polls(poller, stop, polls=2, between=lambda: gdelt.publish(exports[0], exports[1]))
    run_live(poller, ingest, interval_s=0, stop=stop)

    assert [poller.ledger.state(e.name) for e in exports[:2]] == ["ingested", "ingested"]
    rows = store.scan().height
    assert rows > 0
    assert len(store.steps()) == 2

    again = make_poller(gdelt.url, tmp_path)  # restart on the same ledger
    stop = threading.Event()
    stop_after_polls(again, stop, polls=1)
    run_live(again, ingest, interval_s=0, stop=stop)
    lost_ledger = make_poller(gdelt.url, tmp_path / "fresh")  # even a lost ledger adds nothing
    stop = threading.Event()
    stop_after_polls(lost_ledger, stop, polls=1)
    run_live(lost_ledger, ingest, interval_s=0, stop=stop)
    assert store.scan().height == rows
    assert gdelt.hits[gdelt.path_of(exports[1])] == 2


def test_run_live_ingests_what_a_crash_left_pending_and_keeps_a_failing_file(
    gdelt, exports, tmp_path
):
    gdelt.publish(exports[0])
    [left] = make_poller(gdelt.url, tmp_path).poll_once()  # fetched, then "crash"
    poller = make_poller(gdelt.url, tmp_path)
    stop = threading.Event()
    stop_after_polls(poller, stop, polls=1)
    seen: list[str] = []

    def flaky_ingest(path: Path) -> None:
        seen.append(path.name)
        raise RuntimeError("disk full")

    with capture_logs() as logs:
        run_live(poller, flaky_ingest, interval_s=0, stop=stop)
    assert seen == [left.name]
    assert any(e["event"] == "ingest_failed" for e in logs)
    assert poller.pending() == [left]


# --------------------------------------------------------------------------- the ingest stage


def test_ingest_stage_downloads_live_exports_and_closes_their_steps(gdelt, exports, tmp_path):
    from services.ingest.service import IngestStage
    from shared.config import Config
    from shared.protocol import MessageType

    gdelt.publish(exports[0])
    config = Config(
        name="live",
        paths={"run_dir": tmp_path / "run"},
        ingest={
            "dataset": "LIVE",
            "min_free_mb": 0,
            "live": {"base_url": gdelt.url, "interval_s": 0.05},
            "mapping": {"time_field": "dateadded", "step_minutes": 15},
        },
        stages={"ingest": {}},
    )
    sent: list = []

    def send(message) -> bool:
        sent.append(message)
        return True

    stage = IngestStage(config, send)
    thread = stage.start_live()
    snapshots: list = []
    deadline = time.monotonic() + 10
    while not snapshots and time.monotonic() < deadline:
        stage.tick(time.time())
        snapshots = [m for m in sent if m.type == MessageType.SNAPSHOT]
        time.sleep(0.05)
    stage.close()
    assert not thread.is_alive()  # close waited for it
    assert len(snapshots) == 1 and snapshots[0].frames[0].shape[0] > 0
    assert (config.download_dir / exports[0].name).exists()
    assert stage.store.scan().height == snapshots[0].frames[0].shape[0]
    state = read_state(config.paths.run_dir / "live" / "LIVE.json")
    assert state is not None and state.last_file == exports[0].name and state.polls >= 1
