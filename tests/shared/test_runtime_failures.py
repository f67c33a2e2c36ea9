"""Nothing a stage does with one message, tick or reply can stop it: each failure is counted,
logged and dead-lettered, and the loop goes on serving the next good message."""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zmq
from malformed import CORPUS, good

from shared.config import Config
from shared.protocol import Message, MessageType, decode, new_message
from shared.runtime import StageRuntime


def _config(run_dir: Path, **stage: object) -> Config:
    return Config(name="t", paths={"run_dir": run_dir}, stages={"s": stage})


def _reply(msg: Message, **meta: object) -> Message:
    return new_message(MessageType.SCORES, msg.id, [np.zeros(2, np.float32)], meta=meta)


def misbehaving_handler(_socket: str, msg: Message) -> list[tuple[str, Message]]:
    """A handler whose replies fail in every way a send can (the id says which)."""
    kind = msg.id.split("-")[0]
    if kind == "raise":
        raise RuntimeError("handler bug")
    if kind == "bigheader":  # a reply header over the 64 KiB limit (encode's ValueError)
        return [("out", _reply(msg, pad="x" * 70_000))]
    if kind == "intframe":  # an integer frame (encode's TypeError)
        return [("out", new_message(MessageType.SCORES, msg.id, [np.arange(3)]))]
    if kind == "strframe":  # not even an array
        return [("out", new_message(MessageType.SCORES, msg.id, ["abc"]))]
    if kind == "noroute":
        return [("nowhere", _reply(msg))]
    return [("out", _reply(msg))]


def test_tick_errors_are_counted_dead_lettered_and_the_next_tick_runs(tmp_path):
    calls = []

    def tick(now: float):
        calls.append(now)
        if len(calls) == 1:
            raise OSError("disk gone")
        return [("out", new_message(MessageType.QUERY, "after"))]

    stage = StageRuntime("s", _config(tmp_path), lambda *_: [], tick=tick)
    assert stage.run_tick(1.0) == []
    routes = stage.run_tick(2.0)
    assert [m.id for _, m in routes] == ["after"]
    (record,) = stage.dead_letters.read()
    assert (record["reason"], record["detail"]) == ("tick_error", "OSError: disk gone")
    assert stage.metrics.snapshot()["rejected"] == {"tick_error": 1.0}


def test_a_decoder_bug_is_refused_like_bad_input(tmp_path, monkeypatch):
    def broken_decode(*_args):
        raise IndexError("decoder bug")

    monkeypatch.setattr("shared.runtime.decode", broken_decode)
    stage = StageRuntime("s", _config(tmp_path), lambda *_: [])
    assert stage.receive("in", good("x")) == []
    (record,) = stage.dead_letters.read()
    assert record["reason"] == "decoder_bug" and "IndexError: decoder bug" in record["detail"]


def test_a_failing_batch_is_retried_alone_and_only_the_bad_message_is_dead_lettered(tmp_path):
    def batch(_socket: str, msgs: list[Message]):
        if any(m.id.startswith("raise") for m in msgs):
            raise RuntimeError("one bad apple")
        return [("out", _reply(m)) for m in msgs]

    stage = StageRuntime(
        "s", _config(tmp_path), misbehaving_handler, batch_handler=batch, batch_size=8
    )
    routes = stage.receive_batch("in", [good("a"), good("raise-1"), good("b"), CORPUS["nan"][0]()])
    assert [m.id for _, m in routes] == ["a", "b"]
    reasons = [r["reason"] for r in stage.dead_letters.read()]
    assert sorted(reasons) == ["handler_error", "non_finite"]


def test_an_unwritable_dead_letter_file_is_logged_and_the_stage_carries_on(tmp_path):
    stage = StageRuntime("s", _config(tmp_path), misbehaving_handler)

    def full_disk(*_args):
        raise OSError(28, "No space left on device")

    stage.dead_letters.write = full_disk
    assert stage.receive("in", CORPUS["nan"][0]()) == []
    assert [m.id for _, m in stage.receive("in", good("fine"))] == ["fine"]
    assert stage.metrics.snapshot()["rejected"] == {"non_finite": 1.0}


class Harness:
    """The runtime in a thread, wired over ipc:// in the run dir to a PUSH and a PULL here."""

    def __init__(self, run_dir: Path, handler, tick=None) -> None:
        ins, outs = f"ipc://{run_dir}/in.sock", f"ipc://{run_dir}/out.sock"
        config = _config(
            run_dir,
            heartbeat_s=0.05,
            poll_ms=10,
            sockets={
                "in": {"pattern": "pull", "endpoint": ins, "bind": True},
                "out": {"pattern": "push", "endpoint": outs, "bind": True},
            },
        )
        self.ctx = zmq.Context()
        self.stage = StageRuntime("s", config, handler, tick=tick, context=self.ctx)
        self.thread = threading.Thread(target=self.stage.run)
        self.thread.start()
        self.push = self.ctx.socket(zmq.PUSH)
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVTIMEO, 10_000)
        self.push.connect(ins)
        self.pull.connect(outs)

    def close(self) -> None:
        """Stop the stage and release the sockets; safe to call twice."""
        if self.ctx.closed:
            return
        self.stage.request_stop()
        self.thread.join(timeout=10)
        for sock in (self.push, self.pull):
            sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def harness(tmp_path):
    made: list[Harness] = []

    def start(handler, tick=None) -> Harness:
        made.append(Harness(tmp_path / "run", handler, tick))
        return made[-1]

    yield start
    for h in made:
        h.close()


def _stream(n: int, seed: int = 0) -> tuple[list[list[bytes]], list[str], Counter]:
    """``n`` messages, about one in ten bad: malformed input, a raising handler, or a reply
    that cannot be sent. Returns the parts, the ids that must be answered, and the expected
    dead-letter reasons."""
    rng = random.Random(seed)
    sendable = sorted(c for c in CORPUS if c != "no_parts")
    failures = {
        "raise": "handler_error",
        "bigheader": "send_failed",
        "intframe": "send_failed",
        "strframe": "send_failed",
        "noroute": "send_failed",
    }
    parts, answered, reasons = [], [], Counter()
    for i in range(n):
        roll = rng.random()
        if roll < 0.06:
            case = rng.choice(sendable)
            parts.append(CORPUS[case][0]())
            reasons[CORPUS[case][1].reason] += 1
        elif roll < 0.10:
            kind = rng.choice(sorted(failures))
            parts.append(good(f"{kind}-{i}"))
            reasons[failures[kind]] += 1
        else:
            parts.append(good(f"ok-{i}"))
            answered.append(f"ok-{i}")
    return parts, answered, reasons


def test_a_stream_with_one_in_ten_bad_gets_every_good_message_answered(harness):
    beats = []

    def failing_tick(now: float):
        beats.append(now)
        if len(beats) <= 3:
            raise RuntimeError("tick bug")
        return []

    h = harness(misbehaving_handler, failing_tick)
    parts, answered, reasons = _stream(400)
    assert 0.05 < 1 - len(answered) / len(parts) < 0.15
    for p in parts:
        h.push.send_multipart(p)
    got = [decode(h.pull.recv_multipart()).id for _ in answered]
    assert got == answered  # every good one, once, in order
    h.push.send_multipart(good("ok-last"))
    assert decode(h.pull.recv_multipart()).id == "ok-last"
    assert h.thread.is_alive()
    h.close()

    records = h.stage.dead_letters.read()
    by_reason = Counter(r["reason"] for r in records)
    ticks = by_reason.pop("tick_error")
    assert ticks == min(3, len(beats)) >= 1
    assert by_reason == reasons
    sends = [r for r in records if r["reason"] == "send_failed"]
    details = " | ".join(r["detail"] for r in sends)
    assert "over the 65536-byte limit" in details
    assert "dtype int64" in details and "dtype <U3" in details
    assert "no socket 'nowhere' in stage 's' (['in', 'out'])" in details
    assert all(r["header"]["id"] for r in sends)
    rejected = h.stage.metrics.snapshot()["rejected"]
    assert rejected == {k: float(v) for k, v in (reasons + Counter(tick_error=ticks)).items()}
