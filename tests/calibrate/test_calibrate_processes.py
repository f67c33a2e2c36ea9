"""``geopol serve calibrate`` and ``geopol watch`` as processes: a late subscriber gets the
snapshot and then the stream, and a SIGKILL of the publisher costs it no forecast and no repeat."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
import zmq
from stage_fixtures import live_calibration, scores_message
from synthetic import table_with_temperature

from services.calibrate import artifact
from shared import score_table
from shared.protocol import MessageType, decode
from shared.sockets import send_message

REPO_ROOT = Path(__file__).resolve().parents[2]
GEOPOL = [sys.executable, "-m", "shared.cli"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    table, _ = table_with_temperature(50, 10, temperature=2.0)
    table_path = score_table.save(table, tmp_path / "valid-live.safetensors")
    artifact.save(tmp_path / "calibrator", {"live": live_calibration()}, {"live": table_path})
    ends = {name: f"tcp://127.0.0.1:{_port()}" for name in ("scores", "done", "pub", "snap")}
    config = {
        "name": "calibrate-test",
        "paths": {"run_dir": str(tmp_path / "run")},
        "logging": {"level": "info", "format": "json"},
        "calibrate": {
            "artifact": str(tmp_path / "calibrator"),
            "publish": {"pattern": "pub", "endpoint": ends["pub"], "bind": True},
            "snapshot": {"pattern": "rep", "endpoint": ends["snap"], "bind": True},
        },
        "stages": {
            "calibrate": {
                "metrics_port": None,
                "heartbeat_s": 0.2,
                "sockets": {
                    "scores": {"pattern": "pull", "endpoint": ends["scores"]},
                    "done": {"pattern": "push", "endpoint": ends["done"]},
                },
            }
        },
    }
    path = tmp_path / "calibrate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, ends


def _serve(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*GEOPOL, "serve", "calibrate", "--config", str(config)],
        cwd=REPO_ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _dones(pull: zmq.Socket, count: int, timeout_s: float = 60) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        if pull.poll(200, zmq.POLLIN):
            message = decode(pull.recv_multipart())
            assert message.type is MessageType.DONE
            got.append(message.id)
    return got


def test_a_late_watcher_gets_the_snapshot_then_the_stream_across_a_publisher_kill(
    tmp_path: Path,
) -> None:
    config, ends = _config(tmp_path)
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    push.bind(ends["scores"])
    pull.bind(ends["done"])
    log = tmp_path / "calibrate.log"
    server = _serve(config, log)
    watcher = None
    try:
        first = [scores_message(s, 0, 4) for s in (1, 2, 3)]
        for message in first:
            send_message(push, message)
        assert sorted(_dones(pull, 3)) == sorted(m.id for m in first), log.read_text()

        watcher = subprocess.Popen(
            [*GEOPOL, "watch", "--config", str(config), "--json", "--count", "5",
             "--seconds", "120"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(3)  # it joins late: the three are only in the snapshot

        server.send_signal(signal.SIGKILL)
        server.wait(10)
        server = _serve(config, log)
        # ingest re-sends one it never heard done for, and two new ones come
        again = [first[0], scores_message(4, 0, 4), scores_message(5, 0, 4)]
        for message in again:
            send_message(push, message)
        assert sorted(_dones(pull, 3)) == sorted(m.id for m in again), log.read_text()

        out, err = watcher.communicate(timeout=120)
        assert watcher.returncode == 0, err
        shown = [json.loads(line) for line in out.splitlines()]
        forecasts = [m for m in shown if m["type"] == "forecast"]
        assert [m["seq"] for m in forecasts] == [1, 2, 3, 4, 5]  # no gap, no repeat
        assert {m["id"] for m in forecasts} == {m.id for m in first + again}
        assert all(0 < m["other"] < 1 and len(m["candidates"]) == 10 for m in forecasts)
        assert "forecast_duplicate_not_republished" in log.read_text()
    finally:
        for proc in (server, watcher):
            if proc is not None and proc.poll() is None:
                proc.kill()
        ctx.destroy(linger=0)


def test_serve_calibrate_without_a_calibrator_says_which_and_exits_2(tmp_path: Path) -> None:
    config, _ = _config(tmp_path)
    text = yaml.safe_load(config.read_text())
    text["calibrate"]["artifact"] = str(tmp_path / "missing")
    config.write_text(yaml.safe_dump(text))
    done = subprocess.run(
        [*GEOPOL, "serve", "calibrate", "--config", str(config)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "missing manifest.json" in done.stderr
