"""What the live GDELT poller last did, in a small JSON file ``geopol status`` reads.

Why a file: the poller runs in a thread of the ingest process, and ``geopol status`` must show
its state while that process is up (a poller stuck on a dead server) and after it is gone (when
did it last fetch anything?). The ingest stage's metrics endpoint only answers while it runs, so
the poller rewrites ``RUN_DIR/live/DATASET.json`` after every poll, atomically (shared/atomic.py),
and status reads it directly, as it reads the journal.

Why it lives in shared/: ingest (services/ingest/live.py) is its only writer and shared/status.py
its reader, and no shared module imports a stage's folder; this module is the format both agree
on. Times are Unix seconds (wall clock), since they are read by another process and by people.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from shared.atomic import atomic_write_text
from shared.config import Config

VERSION = 1
"""Bumped when a field changes meaning; a reader refuses a version it does not know."""
MAX_ERROR_CHARS = 500
"""An error is kept to this many characters: a server's error page must not grow the file."""


class LiveStateError(ValueError):
    """The state file exists but is not a state this version wrote; the message names it."""


@dataclass(frozen=True)
class LiveState:
    """The poller's record, cumulative across restarts of the ingest stage.

    ``polls`` counts polls of ``lastupdate.txt`` that ended (``failed_polls`` of them raised);
    ``last_file`` is the newest export downloaded and verified; ``last_error`` the latest failure,
    of a whole poll or of one download, kept after later polls succeed so a person can still see
    it (``last_poll_ok`` says whether the latest poll itself went through).
    """

    url: str
    polls: int = 0
    failed_polls: int = 0
    last_poll_at: float | None = None
    last_poll_ok: bool | None = None
    last_file: str | None = None
    last_file_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    def after_poll(self, now: float, fetched: list[str], errors: list[str]) -> LiveState:
        """This state after a poll that went through: ``fetched`` files (oldest first) arrived
        and ``errors`` are the downloads that failed in it."""
        state = replace(self, polls=self.polls + 1, last_poll_at=now, last_poll_ok=True)
        if fetched:
            state = replace(state, last_file=fetched[-1], last_file_at=now)
        return state.with_error(now, errors[-1]) if errors else state

    def after_failed_poll(self, now: float, error: str) -> LiveState:
        """This state after a poll that raised (server down, malformed ``lastupdate.txt``)."""
        state = replace(
            self,
            polls=self.polls + 1,
            failed_polls=self.failed_polls + 1,
            last_poll_at=now,
            last_poll_ok=False,
        )
        return state.with_error(now, error)

    def with_error(self, now: float, error: str) -> LiveState:
        return replace(self, last_error=error[:MAX_ERROR_CHARS], last_error_at=now)


def state_path(config: Config) -> Path:
    """Where the poller of the configured dataset keeps its state."""
    return config.paths.run_dir / "live" / f"{config.ingest.dataset}.json"


def history_path(config: Config) -> Path:
    """The record ``geopol ingest backfill`` writes once the whole history is in the store: the
    file ``geopol pipeline bootstrap`` takes as proof that its first step is done."""
    return config.paths.run_dir / "live" / f"{config.ingest.dataset}-history.json"


def write_state(path: Path, state: LiveState) -> None:
    """Replace the state file atomically: a reader sees the old state or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"version": VERSION, **asdict(state)}, indent=1) + "\n")


def read_state(path: Path) -> LiveState | None:
    """The state in ``path``, None when there is no file (no poll has ended yet).

    Raises LiveStateError, naming the file, when it is not a state this version wrote.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise LiveStateError(f"{path}: cannot read ({exc})") from exc
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise LiveStateError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("version") != VERSION:
        version = raw.get("version") if isinstance(raw, dict) else None
        raise LiveStateError(f"{path}: not a live state of version {VERSION} (got {version!r})")
    values = {k: v for k, v in raw.items() if k != "version"}
    unknown = sorted(set(values) - set(_TYPES))
    if unknown or "url" not in values:
        raise LiveStateError(f"{path}: unexpected fields {unknown} or no 'url'")
    for name, value in values.items():
        if not _fits(value, _TYPES[name]):
            raise LiveStateError(f"{path}: {name} is {value!r}, not {_TYPES[name]}")
    return LiveState(**values)


_NUMBER = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "polls": (int,),
    "failed_polls": (int,),
    "last_poll_at": (*_NUMBER, type(None)),
    "last_poll_ok": (bool, type(None)),
    "last_file": (str, type(None)),
    "last_file_at": (*_NUMBER, type(None)),
    "last_error": (str, type(None)),
    "last_error_at": (*_NUMBER, type(None)),
}
"""What JSON may hold for each field of :class:`LiveState` (a test keeps the two in step)."""


def _fits(value: object, types: tuple[type, ...]) -> bool:
    """``isinstance``, except that JSON's true/false is no count or time (bool is an int)."""
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))
