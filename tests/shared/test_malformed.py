"""Every malformed message is refused with its own error type and dead-lettered; the stage lives."""

from __future__ import annotations

import json

import pytest
from malformed import CORPUS, good

from shared.config import Config, StageConfig
from shared.protocol import Limits, Message, decode
from shared.protocol.errors import DECODE_ERRORS, MessageTooLargeError
from shared.runtime import StageRuntime


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_decode_raises_the_specific_error(case):
    make, expected = CORPUS[case]
    with pytest.raises(expected) as info:
        decode(make(), Limits(max_header_bytes=65536))
    assert type(info.value) is expected
    assert info.value.reason and info.value.detail


def test_each_error_type_has_a_distinct_reason():
    reasons = [err.reason for err in DECODE_ERRORS]
    assert len(set(reasons)) == len(reasons)
    corpus_errors = {expected for _, expected in CORPUS.values()}
    assert corpus_errors | {MessageTooLargeError} == set(DECODE_ERRORS)


def test_total_size_limit():
    with pytest.raises(MessageTooLargeError):
        decode(good(n=1024), Limits(max_message_bytes=1000))


def _runtime(tmp_path, handled: list[Message]) -> StageRuntime:
    config = Config(name="t", paths={"run_dir": tmp_path}, stages={"echo": StageConfig()})

    def handler(_socket: str, msg: Message):
        handled.append(msg)
        return []

    return StageRuntime("echo", config, handler)


def test_runtime_dead_letters_each_bad_message_and_serves_the_next_good_one(tmp_path):
    handled: list[Message] = []
    stage = _runtime(tmp_path, handled)
    for i, case in enumerate(sorted(CORPUS)):
        make, expected = CORPUS[case]
        assert stage.receive("in", make()) == []
        stage.receive("in", good(f"after-{case}"))
        assert handled[-1].id == f"after-{case}", case
        assert len(handled) == i + 1
    records = [json.loads(line) for line in stage.dead_letters.path.read_text().splitlines()]
    assert [r["error"] for r in records] == [CORPUS[c][1].__name__ for c in sorted(CORPUS)]
    assert all(r["stage"] == "echo" and r["reason"] and r["time"] > 0 for r in records)
    nan_record = records[sorted(CORPUS).index("nan")]
    assert nan_record["header"]["id"] == "bad"  # header kept when readable
    snap = stage.metrics.snapshot()
    assert snap["received"] == 2 * len(CORPUS)
    assert snap["processed"] == len(CORPUS)
    assert sum(snap["rejected"].values()) == len(CORPUS)
    assert snap["rejected"]["non_finite"] == 3


def test_runtime_survives_a_handler_bug_and_dead_letters_the_message(tmp_path):
    config = Config(name="t", paths={"run_dir": tmp_path}, stages={"s": StageConfig()})
    calls = []

    def handler(_socket, msg):
        calls.append(msg.id)
        if msg.id == "boom":
            raise RuntimeError("kaput")
        return []

    stage = StageRuntime("s", config, handler)
    stage.receive("in", good("boom"))
    stage.receive("in", good("fine"))
    assert calls == ["boom", "fine"]
    (record,) = stage.dead_letters.read()
    assert record["reason"] == "handler_error" and "kaput" in record["detail"]
    assert record["header"]["id"] == "boom"
