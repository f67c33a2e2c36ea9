"""Where the live poller's state goes after each poll: a file for ``geopol status``, and gauges.

The file (shared/live_state.py) is what ``geopol status`` reads, so a poller that fetches
nothing shows as such even with the stage down; the gauges put the same times on the stage's
metrics endpoint for a Prometheus to alert on ("no export for an hour").
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from shared.live_state import LiveState, LiveStateError, read_state, write_state
from shared.log import get_logger

log = get_logger(__name__)
STAGE = "ingest"


class LiveReporter:
    """Writes each state to ``path`` and, given a registry, sets the ``geopol_live_*`` gauges."""

    def __init__(self, path: Path, registry: CollectorRegistry | None = None) -> None:
        self.path = path
        self._gauges: dict[str, Gauge] = {}
        if registry is not None:
            for name, what in _GAUGES.items():
                self._gauges[name] = Gauge(
                    f"geopol_live_{name}", what, ["stage"], registry=registry
                )

    def previous(self, url: str) -> LiveState:
        """The state an earlier run left, carried on (for ``url``), or a fresh one; a state
        file this version cannot read is logged and started afresh, never fatal."""
        try:
            found = read_state(self.path)
        except LiveStateError as exc:
            log.warning("live_state_unreadable", error=str(exc))
            found = None
        return LiveState(url=url) if found is None else replace(found, url=url)

    def report(self, state: LiveState) -> None:
        """Record ``state``: the file first (what a person reads), then the gauges."""
        write_state(self.path, state)
        values = {
            "polls": state.polls,
            "failed_polls": state.failed_polls,
            "last_poll_timestamp_seconds": state.last_poll_at,
            "last_file_timestamp_seconds": state.last_file_at,
            "last_error_timestamp_seconds": state.last_error_at,
        }
        for name, gauge in self._gauges.items():
            value = values[name]
            if value is not None:
                gauge.labels(STAGE).set(value)


_GAUGES = {
    "polls": "Polls of lastupdate.txt that ended, across restarts",
    "failed_polls": "Polls of lastupdate.txt that failed, across restarts",
    "last_poll_timestamp_seconds": "Unix time the latest poll ended",
    "last_file_timestamp_seconds": "Unix time the latest export was downloaded and verified",
    "last_error_timestamp_seconds": "Unix time of the latest failed poll or download",
}
