"""Dataset calendars: the published benchmarks' dates, calendar.json, and the steps of t // step."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.calendar import (
    CALENDAR_FILE,
    CalendarError,
    calendar_of,
    check_calendar,
    coarsen,
    make_calendar,
    step_date,
)


def test_icews14_counts_days_from_one_and_its_hourly_copy_hours_from_zero(tmp_path: Path) -> None:
    days = calendar_of("ICEWS14", tmp_path, "day")
    assert days == {"origin_utc": "2013-12-31T00:00:00+00:00", "step_seconds": 86400}
    assert step_date(days, 1) == datetime(2014, 1, 1, tzinfo=UTC)
    assert step_date(days, 365) == datetime(2014, 12, 31, tzinfo=UTC)
    # the nec-research copy: t in hours from 0, step 24; its test split starts at t = 8016
    hours = calendar_of("ICEWS14", tmp_path, "hour")
    assert hours is not None
    steps = coarsen(hours, time_step=24, first_t=0)
    assert steps == {"origin_utc": "2014-01-01T00:00:00+00:00", "step_seconds": 86400}
    assert step_date(steps, 8016 // 24) == step_date(days, 335) == datetime(2014, 12, 1, tzinfo=UTC)


def test_icews05_15_counts_days_from_zero(tmp_path: Path) -> None:
    calendar = calendar_of("ICEWS05-15", tmp_path, "day")
    assert calendar is not None
    assert step_date(calendar, 0) == datetime(2005, 1, 1, tzinfo=UTC)
    assert step_date(calendar, 4016) == datetime(2015, 12, 31, tzinfo=UTC)


def test_other_datasets_use_their_calendar_json_or_have_none(tmp_path: Path) -> None:
    assert calendar_of("GDELT-X", tmp_path, "day") is None
    (tmp_path / CALENDAR_FILE).write_text(
        json.dumps({"origin_utc": "1970-01-01T00:00:00+00:00", "step_seconds": 900})
    )
    calendar = calendar_of("GDELT-X", tmp_path, "day")
    assert calendar is not None
    assert step_date(calendar, 1_893_408) == datetime(2024, 1, 1, tzinfo=UTC)  # 15-minute steps
    # a published name wins over the file: its files hold the benchmark's own indices
    assert calendar_of("ICEWS14", tmp_path, "day") != calendar


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"origin_utc": "2020-01-01T00:00:00", "step_seconds": 60}, "UTC offset"),
        ({"origin_utc": "yesterday", "step_seconds": 60}, "origin_utc"),
        ({"origin_utc": "2020-01-01T00:00:00+00:00", "step_seconds": 0}, "positive integer"),
        ({"origin_utc": "2020-01-01T00:00:00+00:00", "step_seconds": 1.5}, "positive integer"),
        ({"origin_utc": "2020-01-01T00:00:00+00:00"}, "a calendar is"),
        ([1, 2], "a calendar is"),
    ],
)
def test_a_bad_calendar_json_is_refused_naming_the_file_and_field(
    tmp_path: Path, payload: object, message: str
) -> None:
    (tmp_path / CALENDAR_FILE).write_text(json.dumps(payload))
    with pytest.raises(CalendarError, match=message) as caught:
        calendar_of("X", tmp_path, "day")
    assert CALENDAR_FILE in str(caught.value)


def test_origins_are_stored_in_utc() -> None:
    calendar = check_calendar({"origin_utc": "2020-01-01T02:00:00+02:00", "step_seconds": 60}, "x")
    assert calendar["origin_utc"] == "2020-01-01T00:00:00+00:00"
    with pytest.raises(CalendarError, match="UTC offset"):
        make_calendar(datetime(2020, 1, 1), 60)


def test_coarsen_keeps_the_offset_of_the_first_step() -> None:
    """t = 1, 3, 5 with a step of 2: step t // 2 = k starts at raw t = 2k + 1."""
    raw = make_calendar(datetime(2020, 1, 1, tzinfo=UTC), 3600)
    steps = coarsen(raw, time_step=2, first_t=1)
    for t in (1, 3, 5):
        assert step_date(steps, t // 2) == step_date(raw, t)
