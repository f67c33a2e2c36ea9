"""``geopol pipeline up|restart|down`` as a person runs it, with relay stages under supervisord.

Each test writes a config of relay stages (tests/shared/relay_stage.py, the same runtime as the
real services) and points ``GEOPOL_STAGE_MODULES`` at one small module per stage, plus a
``graph`` stage whose artifact is missing, so the real graph is never started. ``up`` must call
a stage up only once its own process beats on its metrics port, and say why one failed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from shared.status import parse_metrics

HERE = Path(__file__).resolve().parent
GEOPOL = [sys.executable, "-m", "shared.cli"]
RELAY_MODULE = "import sys\nfrom relay_stage import main\nsys.exit(main(sys.argv[2], {stage!r}))\n"
DIES_MODULE = "import sys\nprint('boom: nothing to serve', file=sys.stderr)\nsys.exit(3)\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bound(pattern: str, port: int) -> dict[str, object]:
    return {"pattern": pattern, "endpoint": f"tcp://127.0.0.1:{port}", "bind": True}


class Pipeline:
    """A config of relay stages in a temporary run dir, and ``geopol pipeline`` run on it."""

    def __init__(
        self, root: Path, run_dir: Path, stages: dict[str, str], retrain_every: int | None = None
    ) -> None:
        """``stages``: name -> ``relay`` or ``dies`` (a module that exits 3 at once);
        ``retrain_every``: the config's ``retrain.every_steps``.
        ``run_dir`` is apart from ``root`` because supervisord's socket path must stay short,
        and pytest's per-worker temporary folders are long."""
        self.root = root
        self.run_dir = run_dir
        modules = root / "stages"
        modules.mkdir()
        self.ports: dict[str, dict[str, int]] = {}
        config_stages: dict[str, object] = {"graph": {"metrics_port": _free_port()}}
        for name, kind in stages.items():
            text = RELAY_MODULE.format(stage=name) if kind == "relay" else DIES_MODULE
            (modules / f"stage_{name}.py").write_text(text)
            ports = {"in": _free_port(), "out": _free_port(), "metrics": _free_port()}
            self.ports[name] = ports
            config_stages[name] = {
                "metrics_port": ports["metrics"],
                "heartbeat_s": 0.2,
                "sockets": {"in": _bound("pull", ports["in"]), "out": _bound("push", ports["out"])},
            }
        self.config = root / "pipeline.yaml"
        config = {
            "name": "pipeline-test",
            "paths": {"run_dir": str(self.run_dir)},
            "logging": {"level": "info", "format": "json"},
            "graph": {"artifact": str(root / "no-graph-artifact")},
            "retrain": {"every_steps": retrain_every, "poll_s": 0.5},
            "stages": config_stages,
        }
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))
        self.env = {
            k: v for k, v in os.environ.items() if k not in {"GEOPOL_RUN_DIR", "GEOPOL_DATA_DIR"}
        } | {
            "GEOPOL_STAGE_MODULES": ",".join(f"{name}=stage_{name}" for name in stages),
            "PYTHONPATH": os.pathsep.join([str(modules), str(HERE)]),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``geopol pipeline ARGS``; ``up`` with --no-bootstrap, since these configs leave the
        graph unbuilt on purpose (tests/ops/test_bootstrap.py tests the bootstrap)."""
        extra = ["--no-bootstrap"] if args[:1] == ("up",) else []
        return subprocess.run(
            [*GEOPOL, "pipeline", *args, *extra, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=self.root,
            env=self.env,
        )

    def line(self, done: subprocess.CompletedProcess[str], stage: str) -> str:
        """The last line ``geopol pipeline`` printed about the stage."""
        lines = [x for x in done.stdout.splitlines() if x.startswith(f"{stage}: ")]
        assert lines, done.stdout + done.stderr
        return lines[-1]

    def pid_of(self, stage: str) -> int | None:
        """The pid that serves the stage's metrics port now, or None when nothing answers."""
        try:
            url = f"http://127.0.0.1:{self.ports[stage]['metrics']}/metrics"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(parse_metrics(resp.read().decode())["geopol_process_id"])
        except OSError:
            return None

    def supervisord_pid(self) -> int | None:
        path = self.run_dir / "supervisor" / "supervisord.pid"
        return int(path.read_text()) if path.exists() else None


def _alive(pid: int) -> bool:
    """Running, not a zombie (a daemon's parent is init, which may be slow to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def make_pipeline(tmp_path: Path) -> Iterator:
    made: list[Pipeline] = []

    def make(retrain_every: int | None = None, **stages: str) -> Pipeline:
        run_dir = Path(tempfile.mkdtemp(prefix="geopol-run-"))
        made.append(Pipeline(tmp_path, run_dir, stages, retrain_every))
        return made[-1]

    yield make
    for pipeline in made:  # whatever a test left running, supervisord included
        pipeline.run("down")
        pid = pipeline.supervisord_pid()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)
        shutil.rmtree(pipeline.run_dir, ignore_errors=True)


def _pid(line: str) -> int:
    return int(re.search(r"\(pid (\d+)", line).group(1))


def test_up_waits_for_every_built_stage_to_be_healthy(make_pipeline) -> None:
    p = make_pipeline(alpha="relay", beta="relay")
    done = p.run("up")
    assert done.returncode == 0, done.stdout + done.stderr
    pids = {}
    for stage in ("alpha", "beta"):
        line = p.line(done, stage)
        assert line.startswith(f"{stage}: up (pid "), done.stdout
        pids[stage] = _pid(line)
        assert p.pid_of(stage) == pids[stage]  # the heartbeat is that process's own
    graph = p.line(done, "graph")
    assert graph == f"graph: not built: {p.root / 'no-graph-artifact' / 'manifest.json'}"
    assert "make watch CONFIG=" in done.stdout and "make status" in done.stdout
    assert (p.run_dir / "log" / "alpha.log").is_file()

    again = p.run("up")
    assert again.returncode == 0, again.stdout + again.stderr
    for stage in ("alpha", "beta"):
        assert f"{stage}: already running (pid {pids[stage]})" in again.stdout
        assert _pid(p.line(again, stage)) == pids[stage]


def test_a_stage_that_exits_at_once_fails_up_and_the_others_are_still_reported(
    make_pipeline,
) -> None:
    p = make_pipeline(alpha="relay", dead="dies")
    done = p.run("up")
    assert done.returncode == 1, done.stdout + done.stderr
    assert p.line(done, "alpha").startswith("alpha: up (pid ")
    dead = p.line(done, "dead")
    assert dead.startswith("dead: FAILED: exit status 3: boom: nothing to serve (log "), dead
    assert "make watch" not in done.stdout
    time.sleep(1.5)  # supervisord would retry it after 1 s; `up` stopped it instead
    supervisord_log = (p.run_dir / "log" / "supervisord.log").read_text()
    assert supervisord_log.count("spawned: 'dead'") == 1


class _FakeStage(BaseHTTPRequestHandler):
    """Another program on a stage's metrics port, with a fresh heartbeat of its own."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = (
            f'geopol_heartbeat_timestamp_seconds{{stage="beta"}} {time.time()}\n'
            f'geopol_process_id{{stage="beta"}} {os.getpid()}\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_a_port_already_taken_fails_that_stage_with_one_clear_line(make_pipeline) -> None:
    p = make_pipeline(alpha="relay", beta="relay")
    taken = socket.socket()  # a foreign socket on alpha's input endpoint
    taken.bind(("127.0.0.1", p.ports["alpha"]["in"]))
    taken.listen()
    fake = HTTPServer(("127.0.0.1", p.ports["beta"]["metrics"]), _FakeStage)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        done = p.run("up")
    finally:
        fake.shutdown()
        fake.server_close()
        taken.close()
    assert done.returncode == 1, done.stdout + done.stderr
    alpha, beta = p.line(done, "alpha"), p.line(done, "beta")
    endpoint = f"tcp://127.0.0.1:{p.ports['alpha']['in']}"
    assert alpha.startswith(
        f"alpha: FAILED: exit status 2: geopol serve alpha: cannot bind {endpoint} "
        "(stages.alpha.sockets.in): Address already in use (log "
    ), alpha
    metrics = p.ports["beta"]["metrics"]
    assert beta.startswith(
        f"beta: FAILED: exit status 2: geopol serve beta: cannot serve metrics on "
        f"127.0.0.1:{metrics} (stages.beta.metrics_port): Address already in use"
    ), beta


def test_restart_of_one_stage_leaves_the_other_running(make_pipeline) -> None:
    p = make_pipeline(alpha="relay", beta="relay")
    assert p.run("up").returncode == 0
    alpha, beta = p.pid_of("alpha"), p.pid_of("beta")
    done = p.run("restart", "alpha")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "alpha: stopped (exit status 0)" in done.stdout
    restarted = p.line(done, "alpha")
    assert restarted.startswith("alpha: up (pid ") and _pid(restarted) != alpha
    assert not _alive(alpha)
    assert p.pid_of("alpha") == _pid(restarted)
    assert p.pid_of("beta") == beta and "beta" not in done.stdout


def test_down_stops_every_stage_and_the_supervisor(make_pipeline) -> None:
    p = make_pipeline(alpha="relay", beta="relay")
    assert p.run("up").returncode == 0
    pids = [p.pid_of("alpha"), p.pid_of("beta"), p.supervisord_pid()]
    done = p.run("down")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "alpha: stopped (exit status 0)" in done.stdout
    assert "beta: stopped (exit status 0)" in done.stdout
    assert not any(_alive(pid) for pid in pids)
    assert p.pid_of("alpha") is None and p.pid_of("beta") is None
    for stage in ("alpha", "beta"):  # each drained: the loop's own last event
        assert '"event": "stage_stopped"' in (p.run_dir / "log" / f"{stage}.log").read_text()
    assert p.run("down").stdout.strip() == "pipeline: not running"


def test_with_retrain_every_steps_up_runs_the_retrainer_and_down_stops_it(make_pipeline) -> None:
    p = make_pipeline(retrain_every=3, alpha="relay")
    done = p.run("up")
    assert done.returncode == 0, done.stdout + done.stderr
    line = p.line(done, "retrain")
    assert line.startswith("retrain: started (pid ") and "every 3 closed steps" in line, line
    retrainer = _pid(line)
    state = p.run_dir / "generations" / "retrain.json"
    deadline = time.monotonic() + 60
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    status = subprocess.run(
        [*GEOPOL, "status", "--config", str(p.config)],
        capture_output=True, text=True, timeout=60, cwd=p.root, env=p.env,
    )  # fmt: skip
    # no store yet: the failure is shown, and the retrainer keeps running to try again
    assert "retrain: generation 1 failed: no event store at " in status.stdout, status.stdout
    assert _alive(retrainer)
    again = p.run("up")
    assert f"retrain: already running (pid {retrainer})" in again.stdout, again.stdout
    down = p.run("down")
    assert "retrain: stopped" in down.stdout, down.stdout
    assert not _alive(retrainer)


def test_a_run_dir_too_long_for_supervisords_socket_is_refused_by_name(tmp_path: Path) -> None:
    """supervisord binds SOCKET.PID before it links SOCKET, so a run dir whose socket path
    fits sun_path by only a few characters still fails inside supervisord, which says only
    "AF_UNIX path too long"; `up` must refuse it first and name the path and the fix."""
    base = Path(tempfile.mkdtemp(prefix="gp-"))
    tail = len("/supervisor/supervisor.sock")
    run_dir = base / ("r" * (103 - tail - len(str(base)) - 1))
    socket_path = run_dir / "supervisor" / "supervisor.sock"
    assert len(str(socket_path)) == 103  # fits sun_path, but not with a pid suffix
    try:
        done = Pipeline(tmp_path, run_dir, {"alpha": "relay"}).run("up")
    finally:
        shutil.rmtree(base)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{socket_path}: longer than supervisord's unix socket path" in done.stderr
    assert "paths.run_dir" in done.stderr
    assert not socket_path.exists()
