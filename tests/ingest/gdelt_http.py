"""A local stand-in for GDELT 2.0's HTTP server: ``lastupdate.txt`` and export files on
127.0.0.1, so live polling is tested, in process and as a process, without the internet.

Shared by tests/ingest/test_live.py (the poller in process) and tests/ingest/test_serve_live.py
(``geopol serve ingest`` as a subprocess); the ``gdelt`` fixture in tests/ingest/conftest.py
starts one per test.
"""

from __future__ import annotations

import hashlib
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LASTUPDATE = "lastupdate.txt"
PREFIX = "/gdeltv2"
SLOT = timedelta(minutes=15)
LIVE_MAPPING = {  # configs/gdelt-live.yaml's mapping, for the live tests' configs
    "entity_key": "actor_code",
    "relation_level": "root",
    "require_both_actors": True,
    "root_events_only": True,
    "min_mentions": 2,
    "time_field": "dateadded",
    "step_minutes": 15,
}
TRICKLE_BYTES = 16
TRICKLE_PAUSE_S = 0.05
"""A slow path sends ``TRICKLE_BYTES`` every ``TRICKLE_PAUSE_S``: a body of a few KiB then
takes minutes, so only a poller that looks at its stop event between reads ends promptly."""


@dataclass
class FakeGdelt:
    """What the local server serves: ``files`` by path, ``once`` queued ahead of them.

    A queued entry is a body (bytes) or an HTTP status (int) served to exactly one request.
    A path in ``slow`` is sent a trickle at a time (its Content-Length is the whole body).
    ``hits`` counts requests by path, as they arrive.
    """

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    once: dict[str, list[bytes | int]] = field(default_factory=dict)
    slow: set[str] = field(default_factory=set)
    hits: Counter[str] = field(default_factory=Counter)
    closing: threading.Event = field(default_factory=threading.Event)

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

    def wait_for_hit(self, path: str, timeout_s: float) -> bool:
        """True once ``path`` has been requested, False after ``timeout_s`` without."""
        deadline = time.monotonic() + timeout_s
        while self.hits[path] == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def replay_exports(sources: list[Path], out_dir: Path, slots: int, newest: datetime) -> list[Path]:
    """Real export rows re-published as ``slots`` consecutive 15-minute slots ending at
    ``newest``: the rows of ``sources`` in order, cut into equal runs, each run's DATEADDED
    (field 60) set to its slot and zipped as GDELT names it. Every other field is as GDELT
    published it; only the time the row was added moves, so that the 15-minute steps a live
    deployment sees come from real events. The paths, oldest first."""
    rows = [line for source in sources for line in source.read_text("utf-8").splitlines()]
    per_slot = -(-len(rows) // slots)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(slots):
        stamp = f"{newest - (slots - 1 - k) * SLOT:%Y%m%d%H%M%S}"
        fields = [row.split("\t") for row in rows[k * per_slot : (k + 1) * per_slot]]
        body = "".join("\t".join([*f[:59], stamp, *f[60:]]) + "\n" for f in fields)
        path = out_dir / f"{stamp}.export.CSV.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{stamp}.export.CSV", body)
        paths.append(path)
    return paths


def lastupdate_text(base: str, export: Path) -> str:
    """GDELT's three ``SIZE MD5 URL`` lines, the export's true to its bytes."""
    body = export.read_bytes()
    stamp = export.name.split(".")[0]
    return (
        f"{len(body)} {hashlib.md5(body).hexdigest()} {base}/{export.name}\n"
        f"1234 {'a' * 32} {base}/{stamp}.mentions.CSV.zip\n"
        f"5678 {'b' * 32} {base}/{stamp}.gkg.csv.zip\n"
    )


@contextmanager
def serve_gdelt() -> Iterator[FakeGdelt]:
    """A :class:`FakeGdelt` on a free loopback port, for the duration of the block."""
    holder: list[FakeGdelt] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake = holder[0]
            status, body = fake.respond(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path not in fake.slow:
                self.wfile.write(body)
                return
            try:
                for start in range(0, len(body), TRICKLE_BYTES):
                    if fake.closing.wait(TRICKLE_PAUSE_S):
                        return
                    self.wfile.write(body[start : start + TRICKLE_BYTES])
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the client gave up: what a stopped poller does

        def log_message(self, *args: object) -> None:
            """Keep the test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(FakeGdelt(url=f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        holder[0].closing.set()
        server.shutdown()
        server.server_close()
