"""Live GDELT 2.0 polling: fetch each new 15-minute export, verify it, hand it to the ingest.

GDELT 2.0 rewrites ``<base>/lastupdate.txt`` every 15 minutes with three ``SIZE MD5 URL`` lines
(export, mentions, GKG); only the ``*.export.CSV.zip`` line matters here. :class:`LivePoller`
turns that into verified files in ``download_dir`` and :func:`run_live` loops over it.

Guarantees, and why they hold:

* **Nothing unverified is ingested.** A download goes to a temp file in ``download_dir``; only
  after its size and MD5 match lastupdate's is it renamed (atomically, same directory) to its
  final name. A mismatch deletes the temp file, logs expected and actual values and retries with
  exponential backoff; after ``retries`` retries the file is given up *for this poll* and left
  out of the ledger, so the next poll tries again.
* **A restart neither skips nor repeats.** The :class:`~services.ingest.fetch_ledger.FetchLedger`
  records a file as ``fetched`` after the rename and ``ingested`` once the caller says so; files
  ``fetched`` but not ``ingested`` (a crash in between) come back from :meth:`LivePoller.pending`.
  A crash between rename and ledger write only costs a re-download; a crash between ingest and
  ``mark_ingested`` costs nothing, because ``ingest_file`` skips content already in the store.
* **Gaps can be backfilled** (``backfill=True``): slots after the first one the ledger knows and
  within the ``backfill_window`` slots before lastupdate's slot that the ledger lacks are fetched
  from constructed URLs ``<base>/<YYYYMMDDHHMMSS>.export.CSV.zip``. Those have no published MD5,
  so the check is *weaker*: the byte count must match the server's Content-Length and the archive
  must open with at least one member and pass ``zipfile.testzip()`` (every member's CRC-32). That
  catches truncation and transport corruption, not a wrong-but-valid file. A 404 marks the slot
  ``missing`` (GDELT has a few unpublished slots); other failures are retried on later polls while
  the slot is inside the window.
* **A first start can fetch its history** (:meth:`LivePoller.fetch_history`, for
  ``geopol ingest backfill``): the N newest slots, the older ones checked as backfill is, through
  the same ledger, so an interrupted history resumes and the poller later skips what it holds.
* **A stop is prompt.** ``stop`` (the event that ends :func:`run_live`) is also checked between
  downloads, between retries (the backoff waits on it) and between the chunks of a body, so a
  SIGTERM during a slow download or a backoff ends the poller within one socket read (at most
  ``timeout_s`` when the server sends nothing at all), removing the temp file. A temp file left
  by a process killed outright is removed when the next poller starts.
* **Its state is visible.** :func:`run_live` hands a :class:`~shared.live_state.LiveState` (last
  poll, last file, last error) to ``report`` after every poll; the ingest stage writes it where
  ``geopol status`` reads it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from services.ingest.fetch_ledger import Check, FetchLedger
from shared.atomic import fsync_dir
from shared.live_state import LiveState
from shared.log import get_logger

log = get_logger(__name__)

SLOT = timedelta(minutes=15)
EXPORT_SUFFIX = ".export.CSV.zip"
LASTUPDATE = "lastupdate.txt"
MAX_UNCHECKED_BYTES = 256 * 1024**2
"""Read limit for a backfill download (no published size): export zips are well under 1 MiB."""
MAX_LASTUPDATE_BYTES = 64 * 1024
NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)
"""What a flaky network raises: URLError/HTTPError/timeouts are OSErrors, short reads are not."""

_EXPORT_NAME = re.compile(r"(\d{14})\.export\.CSV\.zip")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_STAMP = "%Y%m%d%H%M%S"
_CHUNK = 1 << 16
_USER_AGENT = "geopol-ingest/0.1 (+live poller)"
_PART = ".part"
"""Suffix of a download in progress (``.<name>.<random>.part``); never an export suffix."""


class LastUpdateError(ValueError):
    """``lastupdate.txt`` is not what GDELT publishes; the message names the offending line."""


class Stopped(Exception):
    """The poller's ``stop`` event was set in the middle of a poll; nothing half-done is kept."""


class IntegrityError(Exception):
    """A downloaded file failed verification; carries what was expected and what arrived."""

    def __init__(self, check: str, expected: object, actual: object) -> None:
        super().__init__(f"{check} mismatch: expected {expected}, got {actual}")
        self.check = check
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class RemoteFile:
    """One line of ``lastupdate.txt``: what the server says a file is."""

    size: int
    md5: str
    url: str

    @property
    def name(self) -> str:
        """The file name at the end of the URL."""
        return urlsplit(self.url).path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class _Target:
    """A file to fetch; ``expected`` is None for a backfill URL (no published size/MD5)."""

    name: str
    url: str
    expected: RemoteFile | None


@dataclass(frozen=True)
class _Download:
    """A verified file under its final name, with what to record in the ledger."""

    path: Path
    size: int
    md5: str
    check: Check


@dataclass(frozen=True)
class History:
    """What :meth:`LivePoller.fetch_history` covered: every slot's name, oldest first, and the
    files it downloaded this time (the rest were known to the ledger or not fetched)."""

    names: tuple[str, ...]
    fetched: tuple[Path, ...]


def parse_lastupdate(text: str) -> list[RemoteFile]:
    """Parse ``SIZE MD5 URL`` lines; blank lines are skipped, anything else malformed raises."""
    files = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            files.append(_parse_line(number, line))
    return files


def _parse_line(number: int, line: str) -> RemoteFile:
    fields = line.split()
    if len(fields) != 3:
        raise LastUpdateError(f"lastupdate line {number}: expected 'SIZE MD5 URL', got {line!r}")
    size, md5, url = fields
    if not size.isdigit():
        raise LastUpdateError(
            f"lastupdate line {number}: size {size!r} is not an integer: {line!r}"
        )
    if not _MD5.fullmatch(md5):
        raise LastUpdateError(f"lastupdate line {number}: {md5!r} is not an MD5 hex: {line!r}")
    if urlsplit(url).scheme not in ("http", "https"):
        raise LastUpdateError(f"lastupdate line {number}: {url!r} is not an http(s) URL")
    return RemoteFile(size=int(size), md5=md5.lower(), url=url)


def export_entry(files: list[RemoteFile]) -> RemoteFile:
    """The events export among lastupdate's entries; its name must be a GDELT slot name."""
    exports = [f for f in files if f.url.lower().endswith(EXPORT_SUFFIX.lower())]
    if len(exports) != 1:
        raise LastUpdateError(
            f"lastupdate: expected one {EXPORT_SUFFIX} line, found {len(exports)}"
        )
    if not _EXPORT_NAME.fullmatch(exports[0].name):
        raise LastUpdateError(
            f"lastupdate: export file name {exports[0].name!r} is not a slot name"
        )
    return exports[0]


def slot_of(name: str) -> datetime:
    """The UTC slot time encoded in an export file name."""
    match = _EXPORT_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a GDELT export name (YYYYMMDDHHMMSS{EXPORT_SUFFIX})")
    return datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC)


def export_name(slot: datetime) -> str:
    """GDELT's export file name for a slot."""
    return f"{slot:{_STAMP}}{EXPORT_SUFFIX}"


class LivePoller:
    """Fetches lastupdate's export (and, optionally, missed slots) into ``download_dir``.

    ``retries`` is the number of extra attempts per file within one poll after a failed download
    or verification; attempt ``k`` (from 1) waits ``backoff_s * 2**(k-1)`` seconds first.
    ``stop`` interrupts a poll (see "A stop is prompt" above); ``errors`` lists the downloads
    that failed in the latest poll, one line each, for the state ``geopol status`` shows.
    """

    def __init__(
        self,
        base_url: str,
        download_dir: Path,
        ledger_path: Path,
        *,
        timeout_s: float = 30,
        retries: int = 3,
        backoff_s: float = 2.0,
        backfill: bool = False,
        backfill_window: int = 96,
        stop: threading.Event | None = None,
    ) -> None:
        if retries < 0 or backoff_s < 0 or timeout_s <= 0 or backfill_window < 0:
            raise ValueError(
                "need retries >= 0, backoff_s >= 0, timeout_s > 0, backfill_window >= 0"
            )
        self.base_url = base_url.rstrip("/")
        self.download_dir = Path(download_dir)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = FetchLedger(ledger_path)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backfill = backfill
        self.backfill_window = backfill_window
        self.stop = stop or threading.Event()
        self.errors: list[str] = []
        self._remove_partial_downloads()

    @property
    def lastupdate_url(self) -> str:
        """Where GDELT announces the newest slot's files."""
        return f"{self.base_url}/{LASTUPDATE}"

    # ----------------------------------------------------------------- public API

    def poll_once(self) -> list[Path]:
        """Fetch what is new since the ledger's state; returns the new files, oldest first.

        Network errors and a malformed ``lastupdate.txt`` propagate (``run_live`` logs them and
        polls again later); failures of individual downloads are logged, listed in ``errors``
        and retried next poll. Raises :class:`Stopped` once ``stop`` is set; the files fetched
        before it are in the ledger (``pending`` returns them).
        """
        self.errors = []
        current = export_entry(parse_lastupdate(self._read_lastupdate()))
        targets = self._gap_targets(current.name) if self.backfill else []
        if self.ledger.state(current.name) is None:
            targets.append(_Target(current.name, current.url, current))
        fetched = self._fetch_all(targets)
        log.info("poll_done", current=current.name, targets=len(targets), fetched=len(fetched))
        return fetched

    def fetch_history(
        self,
        slots: int,
        *,
        begin: Callable[[int], None] | None = None,
        done: Callable[[str, Path | None], None] | None = None,
    ) -> History:
        """Fetch the ``slots`` newest slots up to lastupdate's that the ledger lacks, oldest first.

        What a first start with ``live.bootstrap_days`` does before anything is trained. The
        newest slot is checked against lastupdate's size and MD5, the older ones as backfill
        URLs (Content-Length and zip CRCs; a 404 is recorded ``missing``). Slots the ledger
        knows in any state are not asked for again, so an interrupted history resumes where it
        stopped. For a progress bar, ``begin`` is told how many slots will be asked for and
        ``done(name, path)`` each one's outcome (``path`` None when it was not fetched);
        ``errors`` lists the downloads given up.
        """
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.errors = []
        current = export_entry(parse_lastupdate(self._read_lastupdate()))
        newest = slot_of(current.name)
        names = [export_name(newest - k * SLOT) for k in range(slots - 1, -1, -1)]
        targets = self._unknown(names[:-1]) if slots > 1 else []
        if self.ledger.state(current.name) is None:
            targets.append(_Target(current.name, current.url, current))
        log.info("history_targets", slots=slots, newest=current.name, unknown=len(targets))
        if begin is not None:
            begin(len(targets))
        fetched = self._fetch_all(targets, done)
        return History(names=tuple(names), fetched=tuple(fetched))

    def _fetch_all(
        self, targets: list[_Target], done: Callable[[str, Path | None], None] | None = None
    ) -> list[Path]:
        """Download ``targets`` in order, checking ``stop`` before each; the files fetched."""
        fetched = []
        for target in targets:
            if self.stop.is_set():
                raise Stopped(f"stopped before {target.name}")
            path = self._fetch(target)
            if path is not None:
                fetched.append(path)
            if done is not None:
                done(target.name, path)
        return fetched

    def pending(self) -> list[Path]:
        """Files fetched but not yet ingested (e.g. before a crash), oldest first.

        A ledger entry whose file has vanished is forgotten so that a later poll (or backfill)
        fetches it again instead of the loop failing on it forever.
        """
        paths = []
        for name in self.ledger.pending():
            path = self.download_dir / name
            if path.exists():
                paths.append(path)
            else:
                log.warning("pending_file_missing", name=name, dir=str(self.download_dir))
                self.ledger.forget(name)
        return paths

    def mark_ingested(self, name: str) -> None:
        """Record that the caller has ingested ``name`` (a file name from this poller)."""
        self.ledger.mark_ingested(name)

    # ----------------------------------------------------------------- lastupdate and gaps

    def _read_lastupdate(self) -> str:
        with self._open(self.lastupdate_url) as response:
            raw = response.read(MAX_LASTUPDATE_BYTES + 1)
        if len(raw) > MAX_LASTUPDATE_BYTES:
            raise LastUpdateError(
                f"{self.lastupdate_url}: larger than {MAX_LASTUPDATE_BYTES} bytes"
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LastUpdateError(f"{self.lastupdate_url}: not UTF-8 text ({exc})") from exc

    def _gap_targets(self, current: str) -> list[_Target]:
        """Unknown slots after the ledger's first and within the window before ``current``."""
        first = self.ledger.first_name()
        if first is None:
            return []
        newest, oldest = slot_of(current), slot_of(first)
        slots = [newest - k * SLOT for k in range(self.backfill_window, 0, -1)]
        names = [export_name(slot) for slot in slots if slot > oldest]
        if not names:
            return []
        targets = self._unknown(names)
        if targets:
            log.info(
                "backfill_gaps", count=len(targets), first=targets[0].name, last=targets[-1].name
            )
        return targets

    def _unknown(self, names: list[str]) -> list[_Target]:
        """Backfill targets for the names (consecutive slots, oldest first) the ledger lacks."""
        known = self.ledger.states_between(names[0], names[-1])
        return [_Target(n, f"{self.base_url}/{n}", None) for n in names if n not in known]

    # ----------------------------------------------------------------- download and verify

    def _fetch(self, target: _Target) -> Path | None:
        """Download with retries; the final path once verified and recorded, else None."""
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt and self.stop.wait(self.backoff_s * 2 ** (attempt - 1)):
                raise Stopped(f"stopped while backing off from {target.name}")
            try:
                done = self._download(target)
            except IntegrityError as exc:
                failure = str(exc)
                log.warning(
                    "download_rejected",
                    name=target.name,
                    attempt=attempt + 1,
                    check=exc.check,
                    expected=exc.expected,
                    actual=exc.actual,
                )
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    self._client_error(target, exc.code)
                    return None
                failure = self._log_failure(target, attempt, exc)
            except NETWORK_ERRORS as exc:
                failure = self._log_failure(target, attempt, exc)
            else:
                self.ledger.record_fetched(
                    target.name, target.url, size=done.size, md5=done.md5, check=done.check
                )
                log.info("download_done", name=target.name, bytes=done.size, check=done.check)
                return done.path
        log.error("download_given_up", name=target.name, url=target.url, attempts=self.retries + 1)
        self.errors.append(f"{target.name}: given up after {self.retries + 1} attempts: {failure}")
        return None

    def _client_error(self, target: _Target, code: int) -> None:
        """A 4xx will not heal by retrying now; a 404 on a backfill URL means GDELT skipped it."""
        if code == 404 and target.expected is None:
            self.ledger.record_missing(target.name, target.url)
            log.warning("backfill_slot_missing", name=target.name, url=target.url)
        else:
            log.error("download_refused", name=target.name, url=target.url, status=code)
            self.errors.append(f"{target.name}: refused with HTTP {code}")

    @staticmethod
    def _log_failure(target: _Target, attempt: int, exc: BaseException) -> str:
        """Log one failed attempt; returns it as one line."""
        log.warning(
            "download_failed",
            name=target.name,
            attempt=attempt + 1,
            error_type=type(exc).__name__,
            error=str(exc),
        )
        return f"{type(exc).__name__}: {exc}"

    def _download(self, target: _Target) -> _Download:
        """One attempt: stream to a temp file, verify, then rename it into place."""
        fd, tmp_name = tempfile.mkstemp(
            dir=self.download_dir, prefix=f".{target.name}.", suffix=_PART
        )
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, self._open(target.url) as response:
                declared = response.headers.get("Content-Length")
                limit = target.expected.size if target.expected else MAX_UNCHECKED_BYTES
                size, md5 = _copy(response, out, limit, self.stop)
                out.flush()
                os.fsync(out.fileno())
            check = _verify(target, tmp, size, md5, declared)
            final = self.download_dir / target.name
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.download_dir)
        return _Download(path=final, size=size, md5=md5, check=check)

    def _open(self, url: str) -> http.client.HTTPResponse:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        return urllib.request.urlopen(request, timeout=self.timeout_s)

    def _remove_partial_downloads(self) -> None:
        """Delete temp files a killed process left (a stopped one removes its own)."""
        for leftover in self.download_dir.glob(f".*{_PART}"):
            leftover.unlink(missing_ok=True)
            log.info("partial_download_removed", name=leftover.name)


def _copy(
    source: http.client.HTTPResponse, out: BinaryIO, limit: int, stop: threading.Event
) -> tuple[int, str]:
    """Copy at most ``limit + 1`` bytes (enough to notice an oversize body); size and MD5.

    ``read1`` returns what one socket read brings rather than waiting for a whole chunk, so
    ``stop`` is looked at after every read even when the server sends slowly.
    """
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    while size <= limit:
        if stop.is_set():
            raise Stopped(f"stopped after {size} bytes")
        block = source.read1(min(_CHUNK, limit + 1 - size))
        if not block:
            break
        digest.update(block)
        out.write(block)
        size += len(block)
    return size, digest.hexdigest()


def _verify(target: _Target, path: Path, size: int, md5: str, declared: str | None) -> Check:
    """Size and MD5 against lastupdate; for backfill, Content-Length and zip CRCs instead."""
    if target.expected is not None:
        if size != target.expected.size:
            raise IntegrityError("size", target.expected.size, size)
        if md5 != target.expected.md5:
            raise IntegrityError("md5", target.expected.md5, md5)
        return "md5"
    if declared is not None and declared.isdigit() and int(declared) != size:
        raise IntegrityError("size", int(declared), size)
    _check_zip(path)
    return "zip"


def _check_zip(path: Path) -> None:
    """The archive opens, has members, and every member's CRC-32 is right."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip() if archive.namelist() else "<no members>"
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise IntegrityError(
            "zip", "a readable zip archive", f"{type(exc).__name__}: {exc}"
        ) from exc
    if bad is not None:
        raise IntegrityError("zip", "all member CRCs good", f"bad member {bad}")


Report = Callable[[LiveState], None]
"""Told the poller's state after every poll (the ingest stage writes it for ``geopol status``)."""


def run_live(
    poller: LivePoller,
    ingest: Callable[[Path], object],
    *,
    interval_s: float = 60,
    stop: threading.Event,
    report: Report | None = None,
    state: LiveState | None = None,
) -> None:
    """Poll and ingest until ``stop`` (or the poller's own ``stop``) is set; network trouble is
    logged, never fatal.

    Each round: ingest what a previous run left pending, poll, ingest the new files, hand the
    state (``state`` carried forward, a fresh one when None) to ``report``, then wait for the
    rest of ``interval_s`` (or until ``stop``). A file whose ingest raises stays pending and is
    tried again next round, so one bad file or a full disk does not stop the feed; neither does
    a ``report`` that raises (it is logged).
    """
    log.info("live_started", url=poller.lastupdate_url, interval_s=interval_s)
    state = state or LiveState(url=poller.lastupdate_url)
    while not (stop.is_set() or poller.stop.is_set()):
        started = time.monotonic()
        _ingest_all(poller, ingest, poller.pending())
        try:
            new = poller.poll_once()
        except Stopped:
            break
        except (*NETWORK_ERRORS, LastUpdateError) as exc:
            log.warning(
                "poll_failed",
                url=poller.lastupdate_url,
                error_type=type(exc).__name__,
                error=str(exc),
            )
            state = state.after_failed_poll(time.time(), f"{type(exc).__name__}: {exc}")
        else:
            _ingest_all(poller, ingest, new)
            state = state.after_poll(time.time(), [p.name for p in new], poller.errors)
        _report(report, state)
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
    log.info("live_stopped")


def _report(report: Report | None, state: LiveState) -> None:
    if report is None:
        return
    try:
        report(state)
    except Exception:  # a full disk must not stop the feed: the state is only for people
        log.exception("live_report_failed")


def _ingest_all(poller: LivePoller, ingest: Callable[[Path], object], paths: list[Path]) -> None:
    for path in paths:
        try:
            ingest(path)
        except Exception:
            log.exception("ingest_failed", name=path.name)
            continue
        poller.mark_ingested(path.name)
        log.info("file_ingested", name=path.name)
