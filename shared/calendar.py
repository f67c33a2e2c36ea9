"""When a time step happened: the calendar of a dataset's steps, for prompts and reports.

Benchmarks count time in steps, but an LLM prompt needs a date. A calendar is the JSON object
``{"origin_utc": ISO-8601 start of step 0, "step_seconds": length of a step}``; step ``t`` starts
at ``origin + t * step_seconds``. The embedding export records the calendar of its ``t`` column in
its manifest (``None`` when unknown, and prompts then say "step N"), and the LLM stage renders
dates from it with :func:`step_date`.

Where a calendar comes from (:func:`calendar_of`): the published benchmarks by name, because
their files hold bare indices; any other dataset folder may say it in ``calendar.json``
(``geopol dataset from-store`` writes one). No framework and no stage imports here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CALENDAR_FILE = "calendar.json"
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}

#: Start of ``t = 0`` of the published benchmarks, per unit of their ``t`` column. ICEWS14 of the
#: RE-GCN release counts days from 1 = 2014-01-01; the nec-research copy counts hours from
#: 0 = 2014-01-01 00:00. ICEWS05-15 (RE-GCN release) counts days from 0 = 2005-01-01.
KNOWN_ORIGINS: dict[tuple[str, str], datetime] = {
    ("ICEWS14", "day"): datetime(2013, 12, 31, tzinfo=UTC),
    ("ICEWS14", "hour"): datetime(2014, 1, 1, tzinfo=UTC),
    ("ICEWS05-15", "day"): datetime(2005, 1, 1, tzinfo=UTC),
}

Calendar = dict[str, Any]


class CalendarError(ValueError):
    """A calendar that is not ``{"origin_utc": ISO-8601 with offset, "step_seconds": int > 0}``."""


def make_calendar(origin: datetime, step_seconds: int) -> Calendar:
    """The JSON form of a calendar; ``origin`` must be time-zone aware."""
    return check_calendar(
        {"origin_utc": origin.isoformat(), "step_seconds": step_seconds}, "calendar"
    )


def check_calendar(value: object, where: str) -> Calendar:
    """``value`` as a calendar with its origin in UTC, or :class:`CalendarError` naming ``where``
    and the field."""
    origin, seconds = _parse(value, where)
    return {"origin_utc": origin.astimezone(UTC).isoformat(), "step_seconds": seconds}


def step_date(calendar: Mapping[str, Any], t: int) -> datetime:
    """The UTC start of step ``t`` of ``calendar``."""
    origin, seconds = _parse(calendar, "calendar")
    return origin + timedelta(seconds=int(t) * seconds)


def calendar_of(dataset_name: str, directory: Path, time_unit: str) -> Calendar | None:
    """The calendar of a benchmark's ``t`` column as written in its files (``time_unit`` is the
    loader's unit of that column): a published benchmark's by name, else the folder's
    ``calendar.json``, else ``None`` (unknown)."""
    origin = KNOWN_ORIGINS.get((dataset_name, time_unit))
    if origin is not None:
        return make_calendar(origin, UNIT_SECONDS[time_unit])
    path = Path(directory) / CALENDAR_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalendarError(f"{path}: not valid JSON ({exc})") from None
    return check_calendar(payload, str(path))


def coarsen(calendar: Mapping[str, Any], time_step: int, first_t: int) -> Calendar:
    """The calendar of ``t // time_step`` given the calendar of ``t``: what the event store and
    the embedding export count (a benchmark in hours with a step of 24 becomes days).

    Every ``t`` of a dataset is ``first_t`` modulo ``time_step`` (the step is the gcd of the
    gaps), so step ``t // time_step`` starts ``first_t % time_step`` units after a multiple of
    ``time_step``; that offset moves the origin.
    """
    origin, seconds = _parse(calendar, "calendar")
    origin += timedelta(seconds=(first_t % time_step) * seconds)
    return make_calendar(origin, seconds * time_step)


def _parse(value: object, where: str) -> tuple[datetime, int]:
    """Origin and step length of a calendar, each checked."""
    if not isinstance(value, Mapping) or set(value) != {"origin_utc", "step_seconds"}:
        raise CalendarError(
            f"{where}: a calendar is {{'origin_utc': ..., 'step_seconds': ...}}, got {value!r:.200}"
        )
    seconds, text = value["step_seconds"], value["origin_utc"]
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
        raise CalendarError(f"{where}: step_seconds must be a positive integer, got {seconds!r}")
    try:
        origin = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        origin = None
    if origin is None or origin.tzinfo is None:
        raise CalendarError(
            f"{where}: origin_utc must be an ISO-8601 time with a UTC offset, got {text!r}"
        )
    return origin, seconds
