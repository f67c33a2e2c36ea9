"""``geopol pipeline up|down|restart [STAGE...]``: run the stage processes of a config under
supervisord, and say which are healthy; ``geopol pipeline bootstrap``: build what they serve.

``up`` with no stage named first bootstraps (shared/bootstrap.py: simulate, ingest, train the
graph and LLM models, fit the calibrator, each step skipped when current) when some stage is not
built, so one command on a fresh machine ends with every stage running.

``up`` starts every stage that is built, each as its own process (each GPU framework owns its
own memory) under the run dir's supervisord (shared/supervisor.py), then waits until each one's
metrics port shows a fresh heartbeat from that very process (shared/status.py's idea of ``up``,
and the stage's ``geopol_process_id``, so another program on the port does not count). It
prints one line per stage, ``up``, ``FAILED: <why>`` (its exit status and last log line, or no
fresh heartbeat in time) or ``not built: <missing file>``, and exits 1 when a started stage is
not healthy. A stage already running is left alone ("already running"). ``restart`` stops the
named stages (the others keep running) and starts them as ``up`` does; ``down`` stops them with
SIGTERM, so each finishes the message in hand (the journal re-sends anything lost), and with no
stage named stops supervisord too.

With ``retrain.every_steps`` set, ``up`` of the whole pipeline also starts ``geopol retrain
--watch`` as the program ``retrain`` (shared/retrain.py: it builds the next generation of
artifacts beside the stages, which switch to it at a step boundary); ``down`` stops it too.

Logs are ``RUN_DIR/log/STAGE.log``. ``GEOPOL_STAGE_MODULES="name=module,..."`` runs other modules
as stages, or adds stages (each module's ``main`` gets ``--config FILE``); the tests use it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.bootstrap import bootstrap, plan
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.stage_inputs import missing_input
from shared.status import classify, parse_metrics, scrape
from shared.supervisor import ALIVE, STOPPABLE, Files, Supervisor, render

# Stage name -> module whose ``main(argv)`` serves it. Stages not listed are not built yet.
SERVICES = {
    "ingest": "services.ingest.service",
    "graph": "services.graph.service",
    "llm": "services.llm.service",
    "calibrate": "services.calibrate.service",
}
MODULES_ENV = "GEOPOL_STAGE_MODULES"
RETRAIN = "retrain"  # the supervised program that is not a stage (no sockets, no heartbeat)
STOP_TIMEOUT_S = 15.0
WAIT_S = 120.0
POLL_S = 0.25


def services(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """:data:`SERVICES` with the entries of ``GEOPOL_STAGE_MODULES`` over it."""
    found = dict(SERVICES)
    spec = (os.environ if env is None else env).get(MODULES_ENV, "")
    for item in filter(None, (part.strip() for part in spec.split(","))):
        stage, sep, module = item.partition("=")
        if not sep or not stage.strip() or not module.strip():
            raise ConfigError(f"{MODULES_ENV}: {item!r} is not STAGE=MODULE")
        found[stage.strip()] = module.strip()
    return found


@dataclass
class Launch:
    """A stage process being waited for: where its log of this start begins."""

    stage: str
    pid: int
    log: Path
    log_from: int
    supervisor_log_from: int


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def last_log_line(path: Path, start: int = 0) -> str | None:
    """The last non-empty line written to the log since byte ``start`` (this start's output;
    an older run's lines would mislead), or None."""
    size = _log_size(path)
    if size <= start:
        return None
    with open(path, "rb") as fh:
        fh.seek(max(start, size - 65536))
        text = fh.read().decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:400] if lines else None


def _health(config: Config, launch: Launch) -> tuple[str, str]:
    """(state, detail) of one live stage process from its metrics port: state ``up`` only when
    the heartbeat is fresh and the port is served by this process."""
    cfg = config.stage(launch.stage)
    if cfg.metrics_port is None:
        return "no-metrics", "no metrics port, so its health cannot be judged"
    text = scrape(cfg.metrics_port)
    status = classify(launch.stage, cfg, text, time.time())
    if text is not None:
        pid = parse_metrics(text).get("geopol_process_id")
        if pid is None or int(pid) != launch.pid:
            served_by = f"pid {int(pid)}" if pid is not None else "another program"
            return "foreign", (
                f"127.0.0.1:{cfg.metrics_port} is answered by {served_by}, not this stage "
                f"(pid {launch.pid})"
            )
    if status.state == "up":
        return "up", f"heartbeat {status.heartbeat_age_s:.1f}s ago"
    port = f"127.0.0.1:{cfg.metrics_port}"
    if status.state == "down":
        return "down", f"nothing answers on {port}"
    age = status.heartbeat_age_s
    return "stale", f"last heartbeat {age:.1f}s ago on {port}" if age else f"no heartbeat on {port}"


def wait_healthy(
    config: Config, supervisor: Supervisor, launches: list[Launch], wait_s: float
) -> bool:
    """Print one line per stage once it is healthy or has failed; True when none failed.

    A stage whose process exits (or is replaced) fails at once and is stopped, so supervisord
    does not retry it; one still not healthy at the deadline fails but keeps running."""
    pending = {launch.stage: launch for launch in launches}
    ok = True
    deadline = time.monotonic() + wait_s
    last: dict[str, str] = {}
    while pending:
        for stage, launch in list(pending.items()):
            info = supervisor.info(stage)
            if info["state"] not in ALIVE or info["pid"] != launch.pid:
                if info["state"] in STOPPABLE:
                    supervisor.stop(stage)  # no retries of a stage that cannot start
                how = supervisor.exit_reason(stage, launch.supervisor_log_from)
                how = how or f"exited ({info['statename']})"
                print(f"{stage}: FAILED: {how}: {_log_tail(launch)}")
                ok = False
                del pending[stage]
                continue
            state, detail = _health(config, launch)
            if state in {"up", "no-metrics"}:
                print(
                    f"{stage}: {'up' if state == 'up' else 'running'} (pid {launch.pid}, {detail})"
                )
                del pending[stage]
            else:
                last[stage] = detail
        if not pending:
            break
        if time.monotonic() >= deadline:
            for stage, launch in pending.items():
                print(
                    f"{stage}: FAILED: no fresh heartbeat within {wait_s:g}s "
                    f"({last.get(stage, 'not answering')}); still running (pid {launch.pid}): "
                    f"{_log_tail(launch)}"
                )
            return False
        time.sleep(POLL_S)
    return ok


def _log_tail(launch: Launch) -> str:
    line = last_log_line(launch.log, launch.log_from)
    return f"{line} (log {launch.log})" if line else f"it wrote nothing to {launch.log}"


def up(config: Config, config_path: Path, stages: list[str], named: bool, wait_s: float) -> int:
    """Start the built stages among ``stages`` and wait for their health; the exit code."""
    modules = services()
    to_run, ok = [], True
    for stage in stages:
        missing = missing_input(config, stage)
        if stage not in modules:
            print(f"{stage}: not built yet, skipped", file=sys.stderr)
            ok = ok and not named
        elif missing is not None:
            print(f"{stage}: not built: {missing}")
            ok = ok and not named
        else:
            to_run.append(stage)
    if not to_run:
        return 0 if ok else 1
    supervisor = _supervisor(config, config_path, modules)
    launches = []
    since = supervisor.log_size()
    for stage in to_run:
        log = supervisor.files.stage_log(stage)
        info = supervisor.info(stage)
        if info["state"] in ALIVE:
            print(f"{stage}: already running (pid {info['pid']})")
            launches.append(Launch(stage, info["pid"], log, _log_size(log), since))
            continue
        log_from = _log_size(log)
        pid = supervisor.start(stage)
        print(f"{stage}: started (pid {pid}), log {log}")
        launches.append(Launch(stage, pid, log, log_from, since))
    if not named and config.retrain.every_steps is not None:
        _start_retrainer(config, supervisor)
    print(f"waiting up to {wait_s:g}s for each stage's heartbeat ...")
    healthy = wait_healthy(config, supervisor, launches, wait_s)
    if healthy:
        shown = (
            "" if config_path.resolve() == DEFAULT_CONFIG.resolve() else f" CONFIG={config_path}"
        )
        print(
            f"watch: make watch{shown} (forecasts as they arrive); make status{shown} "
            f"(health and counters); logs in {supervisor.files.log_dir}/"
        )
    return 0 if healthy and ok else 1


def _start_retrainer(config: Config, supervisor: Supervisor) -> None:
    """Start ``geopol retrain --watch`` beside the stages, unless it runs already."""
    info = supervisor.info(RETRAIN)
    if info["state"] in ALIVE:
        print(f"{RETRAIN}: already running (pid {info['pid']})")
        return
    pid = supervisor.start(RETRAIN)
    print(
        f"{RETRAIN}: started (pid {pid}), every {config.retrain.every_steps} closed steps, "
        f"log {supervisor.files.stage_log(RETRAIN)}"
    )


def down(config: Config, stages: list[str] | None) -> int:
    """Stop the named stages, or every stage and supervisord; the exit code."""
    supervisor = Supervisor.connect(Files.of(config))
    if supervisor is None:
        print("pipeline: not running")
        return 0
    known = supervisor.names()
    order = [s for s in stages or config.stages if s in known]
    order += [] if stages else [s for s in known if s not in order]  # from an older config
    for stage in reversed(order):
        _stop(supervisor, stage)
    if not stages:
        supervisor.shutdown()
        print(f"pipeline: stopped (supervisord of {supervisor.files.run_dir})")
    return 0


def _stop(supervisor: Supervisor, stage: str) -> None:
    since = supervisor.log_size()
    after = supervisor.stop(stage)
    if after is None:
        return
    how = supervisor.exit_reason(stage, since, "stopped") or f"exit status {after['exitstatus']}"
    print(f"{stage}: stopped ({how})")


def _supervisor(config: Config, config_path: Path, modules: Mapping[str, str]) -> Supervisor:
    files = Files.of(config)
    commands = {
        stage: [sys.executable, "-m", modules[stage], "--config", str(config_path.resolve())]
        for stage in config.stages
        if stage in modules
    }
    if config.retrain.every_steps is not None:
        commands[RETRAIN] = [
            sys.executable, "-m", "shared.cli", RETRAIN, "--config", str(config_path.resolve()),
            "--watch",
        ]  # fmt: skip
    return Supervisor.ensure(files, render(files, commands, Path.cwd(), STOP_TIMEOUT_S))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geopol pipeline", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "restart", "bootstrap"])
    parser.add_argument("stage", nargs="*", help="stages (default: every stage in the config)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument(
        "--wait",
        type=float,
        default=WAIT_S,
        metavar="S",
        help=f"seconds to wait for each started stage's heartbeat (default {WAIT_S:g})",
    )
    parser.add_argument(
        "--force", action="store_true", help="bootstrap: run every step, current or not"
    )
    parser.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="up: start only what is built, even when a stage is not",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)
    for stage in args.stage:
        config.stage(stage)  # an unknown name is an error naming the stages the file has
    stages = args.stage or list(config.stages)
    if args.action == "bootstrap":
        if args.stage:
            parser.error("bootstrap builds every stage's artifacts; it takes no stage names")
        bootstrap(plan(config, args.config), force=args.force)
        return 0
    unbuilt = [stage for stage in stages if missing_input(config, stage) is not None]
    if args.action == "up" and not args.stage and unbuilt and not args.no_bootstrap:
        print(f"not built: {', '.join(unbuilt)}; bootstrapping first (--no-bootstrap skips it)")
        bootstrap(plan(config, args.config))
    if args.action == "down":
        return down(config, args.stage or None)
    if args.action == "restart":
        supervisor = Supervisor.connect(Files.of(config))
        for stage in reversed(stages):
            if supervisor is not None and stage in supervisor.names():
                _stop(supervisor, stage)
    return up(config, args.config, stages, bool(args.stage), args.wait)
