"""Two real processes exchanging embeddings over ipc:// and tcp://127.0.0.1."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import msgpack
import numpy as np
import pytest
import yaml
import zmq
from malformed import CORPUS, good

from shared.protocol import MessageType, decode, encode, new_message
from shared.sockets import send_message

RELAY = Path(__file__).with_name("relay_stage.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """Starts the relay stage in a child process, wired to two sockets bound here."""

    def __init__(self, tmp_path: Path, transport: str) -> None:
        self.ctx = zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVTIMEO, 20_000)
        self.push.setsockopt(zmq.LINGER, 0)
        self.run_dir = tmp_path / "run"
        if transport == "ipc":  # ipc:// socket files must live in the run dir
            self.run_dir.mkdir()
            endpoints = [f"ipc://{self.run_dir}/in.sock", f"ipc://{self.run_dir}/out.sock"]
            self.push.bind(endpoints[0])
            self.pull.bind(endpoints[1])
        else:
            ports = (
                self.push.bind_to_random_port("tcp://127.0.0.1"),
                self.pull.bind_to_random_port("tcp://127.0.0.1"),
            )
            endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
        self.metrics_port = _free_port()
        config = {
            "name": "relay-test",
            "paths": {"run_dir": str(self.run_dir)},
            "logging": {"level": "info", "format": "json"},
            "stages": {
                "relay": {
                    "metrics_port": self.metrics_port,
                    "heartbeat_s": 0.2,
                    "sockets": {
                        "in": {"pattern": "pull", "endpoint": endpoints[0]},
                        "out": {"pattern": "push", "endpoint": endpoints[1]},
                    },
                }
            },
        }
        path = tmp_path / "relay.yaml"
        path.write_text(yaml.safe_dump(config))
        # Logs go to a file, not a pipe: a pipe nobody reads until the end fills up under a
        # long stream and blocks the relay mid-write.
        self.log_path = tmp_path / "relay.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(RELAY), str(path)], stdout=log, stderr=subprocess.STDOUT
            )

    def roundtrip(self, msg_id: str, frame: np.ndarray, trace_id: str | None = None):
        send_message(
            self.push,
            new_message(
                MessageType.EMBEDDINGS,
                msg_id,
                [frame],
                trace_id=trace_id,
                meta={"candidates": [3, 1, 4]},
            ),
        )
        return decode(self.pull.recv_multipart(copy=False))

    def stop(self) -> tuple[int, str]:
        """SIGTERM the relay; its exit code and everything it logged."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        finally:
            self.push.close()
            self.pull.close()
            self.ctx.term()
        return self.proc.returncode, self.log_path.read_text()


@pytest.fixture(params=["ipc", "tcp"])
def relay(request, tmp_path):
    r = Relay(tmp_path, request.param)
    yield r
    if r.proc.poll() is None:
        r.proc.kill()
        r.proc.wait()


def test_embeddings_cross_processes_intact(relay):
    rng = np.random.default_rng(7)
    small = rng.standard_normal((10, 4, 200), dtype=np.float32)  # K x T x d, about 32 KB
    large = rng.standard_normal((1024, 1024), dtype=np.float32)  # 4 MB, sent zero-copy
    for msg_id, frame in [("small", small), ("large", large)]:
        reply = relay.roundtrip(msg_id, frame, trace_id=f"trace-{msg_id}")
        assert reply.type == MessageType.SCORES and reply.id == msg_id
        assert reply.trace_id == f"trace-{msg_id}"
        assert reply.meta == {"candidates": [3, 1, 4], "relayed_by": "relay"}
        expected = frame.astype(np.float64).sum(axis=-1).astype(np.float32)
        np.testing.assert_allclose(reply.frames[0], expected, rtol=1e-6)
    code, err = relay.stop()
    assert code == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    relayed = [e for e in events if e["event"] == "relayed"]
    assert [e["trace_id"] for e in relayed] == ["trace-small", "trace-large"]
    assert all(e["stage"] == "relay" for e in events)
    assert events[-1]["event"] == "stage_stopped" and events[-1]["processed"] == 2


def test_running_stage_dead_letters_bad_messages_and_keeps_serving(relay):
    relay.roundtrip("warm-up", np.ones(3, np.float32))
    sendable = sorted(c for c in CORPUS if c != "no_parts")  # zmq cannot send zero parts
    for case in sendable:
        relay.push.send_multipart(CORPUS[case][0]())
        reply = relay.roundtrip(f"after-{case}", np.ones(3, np.float32))
        assert reply.id == f"after-{case}"
    # a message of a type this socket does not accept is refused too
    wrong = [bytes(p) for p in good("wrong-type")]
    header = msgpack.unpackb(wrong[0])
    header["type"] = "forecast"
    relay.push.send_multipart([msgpack.packb(header), wrong[1]])
    assert relay.roundtrip("last", np.ones(3, np.float32)).id == "last"

    with urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics_port}/metrics") as resp:
        metrics = resp.read().decode()
    assert 'geopol_messages_rejected_total{reason="non_finite",stage="relay"} 3.0' in metrics
    assert f'geopol_messages_processed_total{{stage="relay"}} {len(sendable) + 2}.0' in metrics
    assert "geopol_heartbeat_timestamp_seconds" in metrics

    code, _ = relay.stop()
    assert code == 0
    records = [json.loads(x) for x in (relay.run_dir / "deadletter" / "relay.jsonl").open()]
    assert len(records) == len(sendable) + 1
    assert records[-1]["reason"] == "unknown_type" and records[-1]["header"]["id"] == "wrong-type"


def test_sigterm_finishes_in_flight_work_and_exits_zero(relay):
    frame = np.ones((512, 1024), np.float32)
    for i in range(20):
        send_message(relay.push, new_message(MessageType.EMBEDDINGS, f"m{i}", [frame]))
    first = decode(relay.pull.recv_multipart(copy=False))
    assert first.id == "m0"
    code, err = relay.stop()
    assert code == 0, err
    stopped = [json.loads(x) for x in err.splitlines() if '"stage_stopped"' in x]
    assert len(stopped) == 1 and 1 <= stopped[0]["processed"] <= 20
    assert stopped[0]["rejected"] == {}


def _near_limit(msg_id: str, limit: int = 65_536) -> list[bytes]:
    """A good message whose header is 4 bytes under the limit: the relay's reply, which adds to
    the meta it copies, comes out over it."""

    def parts(pad: int) -> list[bytes]:
        frame = np.arange(8, dtype=np.float32)
        msg = new_message(MessageType.EMBEDDINGS, msg_id, [frame], meta={"pad": "x" * pad})
        return [bytes(p) for p in encode(msg)]

    pad = limit - 4 - len(parts(1000)[0]) + 1000
    made = parts(pad)
    assert len(made[0]) == limit - 4
    return made


def test_a_stream_one_tenth_malformed_gets_every_good_message_answered(relay):
    rng = random.Random(3)
    sendable = sorted(c for c in CORPUS if c != "no_parts")  # zmq cannot send zero parts
    answered, unsendable, refused = [], [], Counter()
    for i in range(300):
        roll = rng.random()
        if roll < 0.07:
            case = rng.choice(sendable)
            relay.push.send_multipart(CORPUS[case][0]())
            refused[CORPUS[case][1].reason] += 1
        elif roll < 0.10:
            unsendable.append(f"near-limit-{i}")
            relay.push.send_multipart(_near_limit(unsendable[-1]))
            refused["send_failed"] += 1
        else:
            relay.push.send_multipart(good(f"ok-{i}"))
            answered.append(f"ok-{i}")
    assert 0.05 < sum(refused.values()) / 300 < 0.15
    got = [decode(relay.pull.recv_multipart(copy=False)).id for _ in answered]
    assert got == answered
    code, err = relay.stop()
    assert code == 0, err
    records = [json.loads(x) for x in (relay.run_dir / "deadletter" / "relay.jsonl").open()]
    assert Counter(r["reason"] for r in records) == refused
    too_big = [r for r in records if r["reason"] == "send_failed"]
    assert [r["header"]["id"] for r in too_big] == unsendable
    assert all("over the 65536-byte limit" in r["detail"] for r in too_big)
