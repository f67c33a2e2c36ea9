"""``geopol serve ingest`` as a user runs it: a process, its output, its sockets and files."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
import zmq

from services.ingest.simulator import WorldParams, simulate
from shared.config import load_config
from shared.journal import Journal
from shared.protocol import Message, MessageType, decode, new_message
from shared.sockets import send_message


def _write_config(tmp_path: Path, ingest: dict) -> tuple[Path, dict[str, str]]:
    # ipc files in the run dir: no port another test process could take in between
    endpoints = {name: f"ipc://{tmp_path}/run/{name}.sock" for name in ("queries", "done")}
    config = {
        "name": "serve-test",
        "paths": {"run_dir": str(tmp_path / "run")},
        "logging": {"level": "info", "format": "json"},
        "ingest": {
            "dataset": "SIM",
            "min_free_mb": 0,
            "queries_per_step": 5,
            "window": 8,
            "mapping": {"time_field": "dateadded", "step_minutes": 15},
            **ingest,
        },
        "stages": {
            "ingest": {
                "heartbeat_s": 0.2,
                "sockets": {
                    "queries": {"pattern": "push", "endpoint": endpoints["queries"], "bind": True},
                    "done": {"pattern": "pull", "endpoint": endpoints["done"], "bind": True},
                },
            }
        },
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, endpoints


def _serve(config: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "serve", "ingest", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize("source", ["absent", None])
def test_serve_ingest_refuses_a_source_it_cannot_read(tmp_path, source):
    """Issue 9, item 15: no idling silently; the message names the key, the path, the file."""
    missing = tmp_path / "absent"
    config, _ = _write_config(tmp_path, {"source": str(missing)} if source else {})
    proc = _serve(config)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "ingest.source" in err and str(config) in err
    if source:
        assert f"not found: {missing}" in err
    else:
        assert "neither ingest.source nor ingest.live is set" in err
    assert not (tmp_path / "run").exists()  # refused before creating anything


def test_serve_ingest_sends_snapshots_and_queries_and_takes_dones(tmp_path):
    sim = tmp_path / "sim"
    simulate(
        sim,
        WorldParams(seed=1, events_per_step=30),
        steps=3,
        start=datetime(2024, 1, 1, tzinfo=UTC),
    )
    config, endpoints = _write_config(tmp_path, {"source": str(sim)})
    ctx = zmq.Context()
    queries, done = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    queries.connect(endpoints["queries"])
    done.connect(endpoints["done"])
    proc = _serve(config)

    def receive(n: int) -> list[Message]:
        messages: list[Message] = []
        while len(messages) < n:
            if not queries.poll(60_000):
                proc.kill()
                _, err = proc.communicate()
                pytest.fail(f"got {len(messages)} of {n} messages; serve ingest said:\n{err}")
            messages.append(decode(queries.recv_multipart()))
        return messages

    try:
        first = receive(11)
        assert [m.type for m in first] == [MessageType.SNAPSHOT] * 3 + [MessageType.QUERY] * 8
        for query in first[3:]:
            send_message(done, new_message(MessageType.DONE, query.id))
        more = receive(7)  # the window freed up
        assert {m.type for m in more} == {MessageType.QUERY}
        assert not {m.id for m in more} & {m.id for m in first}
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        queries.close(linger=0)
        done.close(linger=0)
        ctx.term()
    assert proc.returncode == 0, err
    journal = Journal(load_config(config).journal_path)
    assert journal.counts() == {"pending": 0, "in_flight": 7, "failed": 0, "done": 8}
