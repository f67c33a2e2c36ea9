"""Cutting GDELT files into days for a replay, starting its journal at its history, and
waiting for a due retrain."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pytest

from shared import generations, replay
from shared.config import load_config
from shared.journal import Journal
from shared.replay import prime_journal, step_of
from shared.replay_days import event_files, split_days
from shared.retrain import RetrainState, write_state

HEADER = b'"GLOBALEVENTID","SQLDATE","Actor1Code"\n'


def test_lines_go_to_their_day_byte_for_byte_with_their_files_header(tmp_path: Path) -> None:
    bigquery = tmp_path / "may.csv"
    bigquery.write_bytes(
        HEADER
        + b'1,20120501,"GEO"\n'
        + b'"7",2,20120502,"RUS, x"\n'  # R's row index first: dated by the field after it
        + b'3,2012050,"GEO"\n'  # no day in it: kept, undated
        + b'4,20120501,"GEO"'  # no final newline
    )
    raw = tmp_path / "raw.tsv"
    raw.write_bytes(b"5\t20120502\tGEO\n6\tnot-a-day\tGEO\n")
    (tmp_path / "SOURCE.md").write_text("not data")
    cut = split_days(event_files(tmp_path))
    assert sorted(cut.days) == [date(2012, 5, 1), date(2012, 5, 2)]
    assert cut.days[date(2012, 5, 1)] == {"may.csv": [b'1,20120501,"GEO"\n', b'4,20120501,"GEO"\n']}
    assert cut.days[date(2012, 5, 2)]["raw.tsv"] == [b"5\t20120502\tGEO\n"]
    assert cut.undated == {"may.csv": [b'3,2012050,"GEO"\n'], "raw.tsv": [b"6\tnot-a-day\tGEO\n"]}

    feed = tmp_path / "feed"
    written = cut.write_day(date(2012, 5, 2), feed)
    assert [p.name for p in written] == ["20120502.may.csv", "20120502.raw.tsv"]
    assert written[0].read_bytes() == HEADER + b'"7",2,20120502,"RUS, x"\n'  # header on top
    assert not list(feed.glob(".*"))  # no partial file left behind
    assert cut.write_day(None, feed)[0].name == "00000000-undated.may.csv"


def test_the_history_is_journaled_closed_but_its_last_step_once(tmp_path: Path) -> None:
    class Paths:
        journal_path = tmp_path / "journal.sqlite"

    history = [step_of(date(2012, 5, d)) for d in (1, 2, 4)]
    assert history[0] == 15461  # days since 1970-01-01: the store's daily steps
    assert prime_journal(Paths, history) == 2
    journal = Journal(Paths.journal_path)
    assert journal.closed_steps() == set(history[:2])
    assert journal.unsent_snapshots() == history[:2]  # the graph still gets them
    assert journal.counts()["pending"] == 0  # and nobody is asked about the past
    journal.close()
    assert prime_journal(Paths, history) == 0  # a resumed replay leaves the journal alone


def test_a_due_retrain_is_awaited_until_promoted_and_a_failed_one_stops_the_replay(
    tmp_path: Path, monkeypatch
) -> None:
    repo = Path(__file__).resolve().parents[2]
    text = (
        (repo / "configs" / "default.yaml")
        .read_text()
        .replace("run_dir: var", f"run_dir: {tmp_path}")
    )
    (tmp_path / "c.yaml").write_text(text)
    config = load_config(tmp_path / "c.yaml")
    monkeypatch.setattr(replay, "POLL_S", 0.01)
    monkeypatch.setattr(replay, "steps_since", lambda _config, _served: 3)
    assert replay.wait_retrained(config, 7, timeout_s=1) is None  # not due: no wait

    monkeypatch.setattr(replay, "steps_since", lambda _config, _served: 7)
    later = threading.Timer(
        0.2, generations.promote, (config, generations.generation(config, 1, 9))
    )
    later.start()
    promoted = replay.wait_retrained(config, 7, timeout_s=10)
    later.join()
    assert promoted is not None and promoted.number == 1

    write_state(config, RetrainState("failed", 1, 7, 7, 2, "step 'train llm' failed", 0.0))
    with pytest.raises(replay.ReplayError, match="train llm"):
        replay.wait_retrained(config, 7, timeout_s=10)
    write_state(config, RetrainState("building", 1, 7, 7, 2, None, 0.0))
    with pytest.raises(replay.ReplayError, match="not promoted within"):
        replay.wait_retrained(config, 7, timeout_s=0.05)
