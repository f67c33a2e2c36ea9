"""Live GDELT 2.0 polling against a local HTTP server; nothing here touches the internet."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from services.ingest.export_ingest import ingest_file
from services.ingest.fetch_ledger import LedgerError
from services.ingest.live import (
    LASTUPDATE,
    LastUpdateError,
    LivePoller,
    RemoteFile,
    parse_lastupdate,
    run_live,
)
from services.ingest.mapping import MappingConfig
from services.ingest.simulator import WorldParams, simulate
from shared.event_store import EventStore

START = datetime(2024, 1, 1, tzinfo=UTC)
PREFIX = "/gdeltv2"
SIM_MAPPING = MappingConfig(relation_level="root", time_field="dateadded", step_minutes=15)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> list[Path]:
    """Three consecutive simulated slots as GDELT ships them (.export.CSV.zip)."""
    out = tmp_path_factory.mktemp("sim")
    simulate(out, WorldParams(seed=5, events_per_step=15), steps=3, start=START, zipped=True)
    return sorted(out.glob("*.export.CSV.zip"))


@dataclass
class FakeGdelt:
    """What the local server serves: ``files`` by path, ``once`` queued ahead of them.

    A queued entry is a body (bytes) or an HTTP status (int) served to exactly one request.
    """

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    once: dict[str, list[bytes | int]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)

    def publish(self, *paths: Path) -> None:
        """Serve ``paths`` and point lastupdate.txt's export line at the last one."""
        for path in paths:
            self.files[self.path_of(path)] = path.read_bytes()
        self.files[self.path_of(LASTUPDATE)] = lastupdate_text(self.url, paths[-1]).encode()

    def path_of(self, file: Path | str) -> str:
        """The request path of a file under the base URL."""
        return f"{PREFIX}/{Path(file).name}"

    def respond(self, path: str) -> tuple[int, bytes]:
        self.hits[path] += 1
        queued = self.once.get(path)
        item: bytes | int = queued.pop(0) if queued else self.files.get(path, 404)
        return (item, b"") if isinstance(item, int) else (200, item)


def lastupdate_text(base: str, export: Path) -> str:
    body = export.read_bytes()
    stamp = export.name.split(".")[0]
    return (
        f"{len(body)} {hashlib.md5(body).hexdigest()} {base}/{export.name}\n"
        f"1234 {'a' * 32} {base}/{stamp}.mentions.CSV.zip\n"
        f"5678 {'b' * 32} {base}/{stamp}.gkg.csv.zip\n"
    )


@pytest.fixture
def gdelt() -> Iterator[FakeGdelt]:
    holder: list[FakeGdelt] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = holder[0].respond(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Keep the test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(FakeGdelt(url=f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


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
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(snapshots) == 1 and snapshots[0].frames[0].shape[0] > 0
    assert (config.download_dir / exports[0].name).exists()
    assert stage.store.scan().height == snapshots[0].frames[0].shape[0]
