"""A stage never blocks on a missing peer: messages wait in order and flow once it connects."""

from __future__ import annotations

import threading
import time

import zmq

from shared.config import Config
from shared.protocol import MessageType, decode, new_message
from shared.runtime import StageRuntime


def test_messages_wait_for_a_late_peer_and_stop_stays_prompt(tmp_path):
    endpoint = f"ipc://{tmp_path}/out.sock"
    config = Config(
        name="t",
        paths={"run_dir": tmp_path},
        stages={
            "src": {
                "heartbeat_s": 0.05,
                "poll_ms": 10,
                "sockets": {"out": {"pattern": "push", "endpoint": endpoint, "bind": True}},
            }
        },
    )
    counter = iter(range(1000))

    def tick(_now: float):
        return [("out", new_message(MessageType.QUERY, f"m{next(counter)}"))]

    ctx = zmq.Context()
    stage = StageRuntime("src", config, lambda *_: [], tick=tick, context=ctx)
    thread = threading.Thread(target=stage.run)
    thread.start()
    time.sleep(0.5)  # ~10 ticks with nobody listening: the loop must keep beating
    assert thread.is_alive()
    beats = stage.metrics.registry.get_sample_value(
        "geopol_heartbeat_timestamp_seconds", {"stage": "src"}
    )
    assert beats is not None and time.time() - beats < 0.5
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVTIMEO, 5000)
    pull.connect(endpoint)
    ids = [decode(pull.recv_multipart()).id for _ in range(5)]
    assert ids == ["m0", "m1", "m2", "m3", "m4"]
    started = time.monotonic()
    stage.request_stop()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 2
    pull.close(linger=0)
    ctx.term()
