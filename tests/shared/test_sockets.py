"""Socket options that bound what a peer can make a stage hold, and who may connect."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest
import zmq

from shared.config import Config, SocketConfig
from shared.protocol import Limits
from shared.runtime import StageRuntime
from shared.sockets import open_socket

LIMITS = Limits(max_header_bytes=512, max_message_bytes=1024)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def _ipc(path: Path, pattern: str, bind: bool = True) -> SocketConfig:
    return SocketConfig(pattern=pattern, endpoint=f"ipc://{path}", bind=bind)


def test_receiving_sockets_refuse_a_part_over_the_limit_before_holding_it(ctx, tmp_path):
    pull = open_socket(ctx, _ipc(tmp_path / "in.sock", "pull"), limits=LIMITS)
    push = open_socket(ctx, _ipc(tmp_path / "in.sock", "push", bind=False), limits=LIMITS)
    assert pull.getsockopt(zmq.MAXMSGSIZE) == 1024
    assert push.getsockopt(zmq.MAXMSGSIZE) == -1  # a sender receives nothing to bound
    push.send_multipart([b"h" * 500, b"f" * 1024])  # each part within the limit: delivered
    assert pull.poll(5000) and [len(p) for p in pull.recv_multipart()] == [500, 1024]
    push.send(b"x" * 1025)
    assert not pull.poll(500)  # dropped by ZeroMQ, the sender disconnected
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the sender reconnects; small messages flow again
        if push.poll(0, zmq.POLLOUT):  # IMMEDIATE: writable only once reconnected
            push.send(b"small")
        if pull.poll(200):
            assert pull.recv() == b"small"
            break
    else:
        pytest.fail("no message arrived after the oversized one")


def test_a_stage_sets_maxmsgsize_from_its_config(tmp_path):
    endpoint = f"ipc://{tmp_path}/in.sock"
    config = Config(
        name="t",
        paths={"run_dir": tmp_path},
        protocol={"max_message_bytes": 4096, "max_header_bytes": 1024},
        stages={"s": {"sockets": {"in": {"pattern": "pull", "endpoint": endpoint, "bind": True}}}},
    )
    ctx = zmq.Context()
    stage = StageRuntime("s", config, lambda *_: [], context=ctx)
    thread = threading.Thread(target=stage.run)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while "in" not in stage.sockets and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stage.sockets["in"].getsockopt(zmq.MAXMSGSIZE) == 4096
    finally:
        stage.request_stop()
        thread.join(timeout=5)
        ctx.term()


def test_a_bound_ipc_socket_file_is_owner_only(ctx, tmp_path):
    path = tmp_path / "fresh" / "out.sock"
    open_socket(ctx, _ipc(path, "push"))
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # a missing folder: owner-only
