"""CurveZMQ lets in only a client that knows the server's key and whose own key is allowed;
``geopol keys`` makes the pairs; an endpoint off loopback without keys is refused at start.

The server runs on tcp://127.0.0.1 with ``security.curve: always``, so Curve is exercised on
this one machine exactly as it would be between two.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zmq
import zmq.auth

from shared.config import Config, SocketConfig
from shared.curve import Curve, CurveKeyError, stop_authenticator
from shared.keys import create_pair
from shared.protocol import MessageType, decode, new_message
from shared.runtime import StageRuntime
from shared.sockets import open_socket, send_message

CLI = "import sys; from shared.cli import main; sys.exit(main(sys.argv[1:]))"
REFUSED_MS = 400  # a refused client gets nothing in this long


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    stop_authenticator(context)
    context.destroy(linger=0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(keys: Path, port: int, curve: str = "always") -> Config:
    endpoint = f"tcp://127.0.0.1:{port}"
    return Config.model_validate(
        {
            "name": "t",
            "security": {"curve": curve, "keys_dir": str(keys)},
            "stages": {
                "server": {
                    "sockets": {"out": {"pattern": "push", "endpoint": endpoint, "bind": True}}
                },
                "client": {"sockets": {"in": {"pattern": "pull", "endpoint": endpoint}}},
            },
        }
    )


@pytest.fixture
def world(tmp_path: Path, ctx: zmq.Context):
    """A Curve server whose allow-list holds ``client``; ``client`` also holds the server's key."""
    keys = tmp_path / "keys"
    create_pair(keys, "server")
    create_pair(keys, "client")
    create_pair(keys, "intruder")  # a real pair, not allow-listed
    create_pair(keys, "impostor")  # a public key that is not the server's
    shutil.copy(keys / "client.key", keys / "authorized" / "client.key")
    config = _config(keys, _free_port())
    server = open_socket(
        ctx, config.stage("server").sockets["out"], curve=Curve.of(config, "server")
    )
    assert server.curve_server
    return config, server


def _client(ctx, config: Config, curve: Curve | None, **changes) -> zmq.Socket:
    cfg = config.stage("client").sockets["in"].model_copy(update=changes)
    return open_socket(ctx, cfg, curve=curve)


def _send(server: zmq.Socket, payload: bytes) -> bool:
    """Send once a peer has completed its handshake (PUSH sets IMMEDIATE)."""
    if not server.poll(REFUSED_MS, zmq.POLLOUT):
        return False
    server.send(payload)
    return True


def test_an_allowed_client_with_the_server_key_gets_the_message(ctx, world):
    config, server = world
    pull = _client(ctx, config, Curve.of(config, "client"))
    assert pull.mechanism == zmq.CURVE and not pull.curve_server
    assert server.poll(5000, zmq.POLLOUT)
    server.send(b"forecast")
    assert pull.poll(5000) and pull.recv() == b"forecast"


@pytest.mark.parametrize("who", ["plain", "wrong_server_key", "unknown_key"])
def test_a_client_without_the_server_key_or_with_an_unknown_key_gets_nothing(ctx, world, who):
    config, server = world
    curve = Curve.of(config, "client")
    if who == "plain":  # no Curve at all
        pull = _client(ctx, config, None)
    elif who == "wrong_server_key":  # allowed, but it does not know the server's key
        pull = _client(ctx, config, curve, server_key="impostor")
    else:  # knows the server's key, but its own key is not allow-listed
        pull = _client(ctx, config, dataclasses.replace(curve, identity="intruder"))
    assert pull.mechanism == (zmq.NULL if who == "plain" else zmq.CURVE)
    assert not _send(server, b"secret")  # no handshake completed: nowhere to send
    assert not pull.poll(REFUSED_MS)


def test_loopback_and_ipc_stay_plain_under_auto(ctx, tmp_path):
    config = _config(tmp_path / "no-keys", _free_port(), curve="auto")
    server = open_socket(
        ctx, config.stage("server").sockets["out"], curve=Curve.of(config, "server")
    )
    pull = _client(ctx, config, Curve.of(config, "client"))
    assert server.mechanism == pull.mechanism == zmq.NULL
    assert server.poll(5000, zmq.POLLOUT)
    server.send(b"plain")
    assert pull.poll(5000) and pull.recv() == b"plain"
    ipc = SocketConfig(pattern="pull", endpoint=f"ipc://{tmp_path}/s.sock", bind=True)
    assert open_socket(ctx, ipc, curve=Curve.of(config, "server")).mechanism == zmq.NULL


def _off_loopback(tmp_path: Path, socket_cfg: dict) -> Config:
    return Config.model_validate(
        {
            "name": "t",
            "paths": {"run_dir": str(tmp_path / "run")},
            "stages": {"g": {"sockets": {"s": socket_cfg}}},
        }
    )


def test_a_binder_off_loopback_without_keys_is_refused_with_one_line(tmp_path, capsys):
    config = _off_loopback(
        tmp_path, {"pattern": "push", "endpoint": "tcp://0.0.0.0:5599", "bind": True}
    )
    runtime = StageRuntime("g", config, lambda *_: [], context=zmq.Context())
    assert runtime.run() == 2
    err = capsys.readouterr().err.strip()
    missing = tmp_path / "run" / "keys" / "g.key_secret"
    assert err.count("\n") == 0 and "geopol serve g: tcp://0.0.0.0:5599" in err
    assert str(missing) in err and "missing" in err and "geopol keys g" in err
    assert runtime.sockets == {}  # nothing was bound


def test_a_connecter_off_loopback_names_the_missing_server_key(tmp_path):
    endpoint = "tcp://10.1.2.3:5599"
    config = _off_loopback(
        tmp_path, {"pattern": "pull", "endpoint": endpoint, "server_key": "ingest"}
    )
    create_pair(config.keys_dir, "g")
    cfg = config.stage("g").sockets["s"]
    with pytest.raises(
        CurveKeyError, match=rf"^{endpoint}: .*{config.keys_dir}/ingest\.key, missing"
    ):
        open_socket(zmq.Context.instance(), cfg, curve=Curve.of(config, "g"))
    with pytest.raises(CurveKeyError, match="not loopback"):  # no settings, no socket
        open_socket(zmq.Context.instance(), cfg)


def _keys_cli(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-c", CLI, "keys", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_geopol_keys_makes_a_private_pair_refuses_to_overwrite_and_force_replaces(tmp_path):
    keys = tmp_path / "keys"
    made = _keys_cli("graph", "--dir", str(keys), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    public, secret = keys / "graph.key", keys / "graph.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    key, none = zmq.auth.load_certificate(public)
    assert none is None and zmq.auth.load_certificate(secret)[0] == key
    assert (keys / "authorized").is_dir() and sorted(p.name for p in keys.iterdir()) == [
        "authorized",
        "graph.key",
        "graph.key_secret",
    ]

    again = _keys_cli("graph", "--dir", str(keys), cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip() == f"geopol keys: {public}: exists; --force replaces the pair"
    assert zmq.auth.load_certificate(public)[0] == key

    forced = _keys_cli("graph", "--dir", str(keys), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert zmq.auth.load_certificate(public)[0] != key
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_geopol_keys_defaults_to_the_run_dir_and_explains_distribution(tmp_path):
    made = _keys_cli("watch", cwd=tmp_path, env={"GEOPOL_RUN_DIR": str(tmp_path / "run")})
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "run" / "keys" / "watch.key_secret").is_file()
    helped = _keys_cli("--help", cwd=tmp_path)
    assert helped.returncode == 0 and "authorized" in helped.stdout and "--force" in helped.stdout
    bad = _keys_cli("../x", "--dir", str(tmp_path), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


RELAY = Path(__file__).with_name("relay_stage.py")


def test_a_stage_process_serves_over_curve_and_stops_cleanly(ctx, tmp_path):
    """The relay stage binds ``in`` as a Curve server and connects ``out`` to this test's
    Curve server; a message crosses both, and SIGTERM still exits 0 (authenticator running)."""
    keys = tmp_path / "keys"
    for name in ("relay", "tester"):
        create_pair(keys, name)
        shutil.copy(keys / f"{name}.key", keys / "authorized" / f"{name}.key")
    ports = _free_port(), _free_port()
    sockets = {
        "in": {"pattern": "pull", "endpoint": f"tcp://127.0.0.1:{ports[0]}", "bind": True},
        "out": {
            "pattern": "push",
            "endpoint": f"tcp://127.0.0.1:{ports[1]}",
            "server_key": "tester",
        },
    }
    raw = {
        "name": "t",
        "paths": {"run_dir": str(tmp_path / "run")},
        "security": {"curve": "always", "keys_dir": str(keys)},
        "stages": {"relay": {"heartbeat_s": 0.2, "sockets": sockets}},
    }
    (tmp_path / "relay.yaml").write_text(yaml.safe_dump(raw))
    config = Config.model_validate(raw)
    tester = Curve.of(config, "tester")
    pull = open_socket(
        ctx,
        SocketConfig(pattern="pull", endpoint=sockets["out"]["endpoint"], bind=True),
        curve=tester,
    )
    push = open_socket(
        ctx,
        SocketConfig(pattern="push", endpoint=sockets["in"]["endpoint"], server_key="relay"),
        curve=tester,
    )
    proc = subprocess.Popen(
        [sys.executable, str(RELAY), str(tmp_path / "relay.yaml")],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert push.poll(20_000, zmq.POLLOUT), "the relay never completed a Curve handshake"
        send_message(push, new_message(MessageType.EMBEDDINGS, "q1", [np.ones((2, 3), np.float32)]))
        assert pull.poll(20_000)
        reply = decode(pull.recv_multipart(copy=False))
        assert reply.id == "q1" and reply.frames[0].tolist() == [3.0, 3.0]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
