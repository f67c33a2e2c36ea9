"""A publisher off loopback speaks only CurveZMQ: an allow-listed watcher gets updates and its
snapshot, one whose key is not allowed gets neither (``security.curve: always`` on 127.0.0.1)."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest
import zmq

from services.calibrate.publisher import SCORECARD, Publisher, SnapshotServer, wire_parts
from services.calibrate.watch import CloneSubscriber
from shared.config import Config
from shared.curve import Curve, stop_authenticator
from shared.keys import create_pair
from shared.protocol import Limits, MessageType, new_message


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    stop_authenticator(context)
    context.destroy(linger=0)


def test_only_an_allowed_watcher_hears_a_curve_publisher(ctx, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    for name in ("calibrate", "watch", "stranger"):
        create_pair(keys, name)
    shutil.copy(keys / "watch.key", keys / "authorized" / "watch.key")
    config = Config.model_validate(
        {
            "name": "t",
            "security": {"curve": "always", "keys_dir": str(keys)},
            "calibrate": {
                "publish": {
                    "pattern": "pub",
                    "endpoint": f"tcp://127.0.0.1:{_port()}",
                    "bind": True,
                },
                "snapshot": {
                    "pattern": "rep",
                    "endpoint": f"tcp://127.0.0.1:{_port()}",
                    "bind": True,
                },
            },
        }
    )
    server = Curve.of(config, "calibrate")
    publisher = Publisher(ctx, config.calibrate.publish, 1.0, server)
    snapshots = SnapshotServer(
        ctx, config.calibrate.snapshot, tmp_path / "ledger.sqlite", 10, server
    )
    snapshots.start()
    assert snapshots.ready.wait(5)
    watch, stranger = (
        CloneSubscriber(
            ctx, config.calibrate.publish, config.calibrate.snapshot, curve=Curve.of(config, name)
        )
        for name in ("watch", "stranger")
    )
    try:
        card = new_message(MessageType.SCORECARD, "card-1", meta={"seq": 1})
        heard: list = []
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:  # PUB drops until the SUB has joined
            publisher.send(wire_parts(SCORECARD, card, Limits()))
            heard = watch.poll(100)
        assert [m.id for m in heard] == ["card-1"]
        assert watch._fetch(0) == []  # the snapshot server answered (an empty ledger)
        assert stranger.poll(300) == [] and stranger._fetch(0) is None  # no answer at all
    finally:
        watch.close()
        stranger.close()
        snapshots.stop()
        snapshots.join(2)
        publisher.close()
