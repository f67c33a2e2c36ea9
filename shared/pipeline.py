"""``geopol pipeline up|down|restart``: start and stop the stage processes of a config.

Each stage runs as its own process (each GPU framework owns its own memory), detached from the
terminal, with its log in RUN_DIR/log/STAGE.log and its pid in RUN_DIR/pids/STAGE.pid. Stopping
sends SIGTERM, so a stage finishes the message in hand; the journal re-sends anything lost.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.config import DEFAULT_CONFIG, Config, load_config

# Stage name -> module whose ``main(argv)`` serves it. Stages not listed are not built yet.
SERVICES = {
    "ingest": "services.ingest.service",
    "graph": "services.graph.service",
    "llm": "services.llm.service",
    "calibrate": "services.calibrate.service",
}
STOP_TIMEOUT_S = 15.0


def _pid_path(config: Config, stage: str) -> Path:
    return config.paths.run_dir / "pids" / f"{stage}.pid"


def running_pid(config: Config, stage: str) -> int | None:
    """The pid of the stage's live process, or None (a stale pid file is removed)."""
    path = _pid_path(config, stage)
    if not path.exists():
        return None
    pid = int(path.read_text().strip())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    return pid


def start(config: Config, config_path: Path, stage: str) -> int | None:
    """Start one stage unless it runs already; returns its pid (None if not built yet)."""
    if stage not in SERVICES:
        print(f"{stage}: not built yet, skipped", file=sys.stderr)
        return None
    pid = running_pid(config, stage)
    if pid is not None:
        print(f"{stage}: already running (pid {pid})")
        return pid
    log_path = config.paths.run_dir / "log" / f"{stage}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _pid_path(config, stage).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVICES[stage], "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _pid_path(config, stage).write_text(f"{proc.pid}\n")
    print(f"{stage}: started (pid {proc.pid}), log {log_path}")
    return proc.pid


def stop(config: Config, stage: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the stage and wait; SIGKILL only if it does not exit within the timeout."""
    pid = running_pid(config, stage)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and running_pid(config, stage) is not None:
        _reap(pid)
        time.sleep(0.1)
    if running_pid(config, stage) is not None:
        os.kill(pid, signal.SIGKILL)
        print(f"{stage}: did not stop within {timeout_s:.0f}s, killed", file=sys.stderr)
    _pid_path(config, stage).unlink(missing_ok=True)
    print(f"{stage}: stopped")


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geopol pipeline", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "restart"])
    parser.add_argument("stage", nargs="?", help="one stage (default: every stage in the config)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    stages = [config.stage(args.stage) and args.stage] if args.stage else list(config.stages)
    if args.action in {"down", "restart"}:
        for stage in reversed(stages):
            stop(config, stage)
    if args.action in {"up", "restart"}:
        for stage in stages:
            start(config, args.config, stage)
    return 0
