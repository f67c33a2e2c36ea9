"""Dead-letter files rotate at a size limit, so a stream of bad input cannot fill the disk."""

from __future__ import annotations

import pytest
from malformed import CORPUS

from shared.config import Config
from shared.protocol import DeadLetterWriter
from shared.protocol.errors import HandlerError
from shared.runtime import StageRuntime


def _fill(writer: DeadLetterWriter, count: int) -> None:
    for i in range(count):
        writer.write(HandlerError(f"failure {i:04d}", {"id": f"m{i}"}), [b"header"])


def test_the_file_rotates_at_max_bytes_and_keeps_only_keep_old_files(tmp_path):
    writer = DeadLetterWriter(tmp_path / "s.jsonl", "s", max_bytes=1000, keep=2)
    _fill(writer, 60)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["s.jsonl", "s.jsonl.1", "s.jsonl.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    records = writer.read()
    details = [r["detail"] for r in records]
    assert details == sorted(details)  # oldest first, across the rotated files
    assert details[-1] == "failure 0059"  # the newest is always kept
    assert len(records) < 60  # the oldest fell off with the third rotation


def test_a_record_larger_than_the_limit_is_still_written_alone(tmp_path):
    writer = DeadLetterWriter(tmp_path / "s.jsonl", "s", max_bytes=100, keep=1)
    _fill(writer, 2)
    assert [r["detail"] for r in writer.read()] == ["failure 0000", "failure 0001"]
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(("max_bytes", "keep"), [(0, 1), (100, 0)])
def test_limits_must_be_positive(tmp_path, max_bytes, keep):
    with pytest.raises(ValueError, match="must be >= 1"):
        DeadLetterWriter(tmp_path / "s.jsonl", "s", max_bytes=max_bytes, keep=keep)


def test_a_stage_rotates_at_the_configured_size(tmp_path):
    config = Config(
        name="t",
        paths={"run_dir": tmp_path},
        protocol={"dead_letter_max_bytes": 4096, "dead_letter_keep": 1},
        stages={"s": {}},
    )
    stage = StageRuntime("s", config, lambda *_: [])
    for _ in range(100):
        stage.receive("in", CORPUS["nan"][0]())
    folder = tmp_path / "deadletter"
    assert sorted(p.name for p in folder.iterdir()) == ["s.jsonl", "s.jsonl.1"]
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 2 * 4096
    assert stage.metrics.snapshot()["rejected"] == {"non_finite": 100.0}


def test_a_record_torn_by_a_kill_is_counted_and_the_records_after_it_still_read(tmp_path):
    writer = DeadLetterWriter(tmp_path / "s.jsonl", "s")
    _fill(writer, 2)
    with open(writer.path, "ab") as fh:  # a write cut short: no closing brace, no newline
        fh.write(b'{"time": 1.0, "stage": "s", "reas')
    writer = DeadLetterWriter(writer.path, "s")  # the stage's next process
    _fill(writer, 1)
    records = writer.read()
    assert [r["reason"] for r in records] == [
        "handler_error",
        "handler_error",
        "unreadable_record",
        "handler_error",
    ]
    assert records[2]["detail"] == "s.jsonl line 3: not a JSON record"
    assert records[3]["detail"] == "failure 0000"
