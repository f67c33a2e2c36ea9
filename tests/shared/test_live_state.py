"""The live poller's state file (shared/live_state.py) and the line ``geopol status`` makes of
it (shared/status.py ``live_line``)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from shared.config import Config
from shared.live_state import (
    _TYPES,
    MAX_ERROR_CHARS,
    LiveState,
    LiveStateError,
    read_state,
    state_path,
    write_state,
)
from shared.status import details, live_line

URL = "http://127.0.0.1:8/gdeltv2/lastupdate.txt"
FILE = "20191024143000.export.CSV.zip"


def _config(tmp_path: Path, live: bool = True) -> Config:
    ingest: dict = {"dataset": "GDELT-LIVE"}
    if live:
        ingest["live"] = {"base_url": "http://127.0.0.1:8/gdeltv2"}
    else:
        ingest["source"] = tmp_path / "exports"
    return Config(name="t", paths={"run_dir": tmp_path / "run"}, ingest=ingest, stages={})


def test_round_trip_of_a_state_after_polls(tmp_path):
    state = LiveState(url=URL).after_poll(100.0, ["a.zip", FILE], [])
    state = state.after_failed_poll(160.0, "URLError: refused")
    state = state.after_poll(220.0, [], ["x.zip: given up after 4 attempts: size mismatch"])
    assert (state.polls, state.failed_polls, state.last_poll_ok) == (3, 1, True)
    assert (state.last_file, state.last_file_at) == (FILE, 100.0)
    assert (state.last_error_at, state.last_error.startswith("x.zip")) == (220.0, True)
    path = tmp_path / "live" / "X.json"
    write_state(path, state)
    assert read_state(path) == state
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["X.json"]  # no temp file left


def test_a_long_error_is_cut_and_a_missing_file_is_none(tmp_path):
    state = LiveState(url=URL).after_failed_poll(1.0, "e" * 10_000)
    assert len(state.last_error) == MAX_ERROR_CHARS
    assert read_state(tmp_path / "absent.json") is None


def test_the_field_types_cover_every_field():
    assert set(_TYPES) == {f.name for f in fields(LiveState)}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "not JSON"),
        ('{"version": 99, "url": "u"}', "version 1"),
        ("[1, 2]", "version 1"),
        ('{"version": 1, "url": "u", "colour": "red"}', "unexpected fields"),
        ('{"version": 1, "polls": 3}', "no 'url'"),
        ('{"version": 1, "url": "u", "polls": "3"}', "polls is '3'"),
        ('{"version": 1, "url": "u", "polls": true}', "polls is True"),
        ('{"version": 1, "url": "u", "last_poll_at": "yesterday"}', "last_poll_at"),
    ],
)
def test_a_state_this_version_did_not_write_is_refused_naming_the_file(tmp_path, text, why):
    path = tmp_path / "X.json"
    path.write_text(text)
    with pytest.raises(LiveStateError, match=why) as info:
        read_state(path)
    assert str(path) in str(info.value)


def test_status_line_says_when_and_what_the_poller_last_did(tmp_path):
    config = _config(tmp_path)
    state = LiveState(url=URL).after_poll(1_000.0, [FILE], [])
    write_state(state_path(config), state.after_failed_poll(1_100.0, "URLError: refused"))
    assert live_line(config, now=1_112.0) == (
        f"live: 2 poll(s), 1 failed, last poll 12s ago (failed), last file {FILE} 1m ago, "
        "last error 12s ago: URLError: refused"
    )
    write_state(state_path(config), state)
    line = live_line(config, now=1_000.0 + 2 * 3600 + 5)
    assert line == (
        f"live: 1 poll(s), 0 failed, last poll 2h ago (ok), last file {FILE} 2h ago, "
        "last error none"
    )
    shown = details(config, "ingest")  # ages against the real clock there
    assert [d for d in shown if d.startswith("live:")] == [live_line(config)]
    assert not any(d.startswith("live:") for d in details(config, "graph"))


def test_status_line_without_a_state(tmp_path):
    live = _config(tmp_path)
    assert live_line(live) == f"live: no poll recorded yet ({state_path(live)})"
    assert live_line(_config(tmp_path, live=False)) is None  # not polling, nothing to say
    state_path(live).parent.mkdir(parents=True)
    state_path(live).write_text("{}")
    line = live_line(live)
    assert line.startswith("live: state unreadable (") and str(state_path(live)) in line
