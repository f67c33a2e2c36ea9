"""The chaos run: real stage processes under ``geopol pipeline``, each SIGKILLed in turn while
queries stream, then a count of what a subscriber received against what ingest journaled.

The stream is the ingest stage's first start on a store of ``built_slots`` closed-but-unasked
steps (a backlog, as after a long downtime) plus the later exports delivered into the watched
folder while it runs, two just before each kill so that the stage dies with work in flight.
Kills happen when the share of journaled queries done passes each point; supervisord starts a killed stage again. One stage is also held down past the
re-send timeout before it comes back, and a second subscriber is frozen (SIGSTOP) for the whole
run, which must not stall anyone. The result: ``lost`` (journaled, never received by the live
subscriber), ``duplicated`` (received more than once), ``pending`` (not done in the journal).

``python tests/ops/chaos.py`` (``make chaos``) is the long run: 3 kills per stage over >= 500
queries, its numbers into reports/bench.json ``pipeline``. ``--fast`` kills each stage once, and
``--pipeline DIR`` runs on a tiny pipeline already bootstrapped there: tests/ops/test_chaos.py
runs ``make chaos`` so on the one the test session built.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tiny_pipeline import (
    GEOPOL,
    REPO,
    RESEND_TIMEOUT_S,
    STAGES,
    TinyPipeline,
    clean_env,
    write_tiny_pipeline,
)

from shared.bench import machine, report
from shared.status import parse_metrics


@dataclass
class ChaosResult:
    queries: int
    kills: int
    lost: int
    duplicated: int
    pending: int
    first_forecast_s: float | None
    forecasts_per_s: float | None
    peak_rss_mb: dict[str, float]
    kills_with_work_in_flight: int
    latency_ms: list[float]  # step close to the subscriber, for the quiet steps' queries
    log: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"lost={self.lost} duplicated={self.duplicated} pending={self.pending}"


class Watcher:
    """``geopol watch --json`` as a process; every forecast it prints, and its id with when."""

    def __init__(self, pipe: TinyPipeline) -> None:
        self.proc = subprocess.Popen(
            [*GEOPOL, "watch", "--json", "--config", str(pipe.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env=clean_env(),
        )
        self.seen: list[tuple[str, float]] = []
        self.forecasts: list[dict] = []  # each forecast as printed, in arrival order
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("type") == "forecast":
                self.seen.append((str(row["id"]), time.time()))
                self.forecasts.append(row)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGCONT)  # in case it was frozen
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def journal_states(pipe: TinyPipeline) -> dict[str, str]:
    """Every journaled query id and its state, read without the ingest stage."""
    path = pipe.run_dir / "journal" / "SIM.sqlite"
    if not path.exists():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return dict(db.execute("SELECT id, state FROM items").fetchall())


def journal_created(pipe: TinyPipeline) -> dict[str, float]:
    """When each query was journaled: when ingest closed the step before it (wall clock)."""
    path = pipe.run_dir / "journal" / "SIM.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return dict(db.execute("SELECT id, created FROM items").fetchall())


def closed_steps(pipe: TinyPipeline) -> int:
    """How many steps ingest has closed (each one journals its queries as it closes)."""
    path = pipe.run_dir / "journal" / "SIM.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return int(db.execute("SELECT COUNT(*) FROM closed_steps").fetchone()[0])


def stage_pid(pipe: TinyPipeline, stage: str) -> int | None:
    """The pid beating on the stage's metrics port, or None when nothing answers."""
    url = f"http://127.0.0.1:{pipe.metrics_ports[stage]}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            pid = parse_metrics(resp.read().decode()).get("geopol_process_id")
    except OSError:
        return None
    return int(pid) if pid is not None else None


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"chaos: {what} did not happen within {timeout_s:g}s")
        time.sleep(poll_s)


EXPORTS_PER_KILL = 2
"""Exports delivered just before each kill, so the stage dies with their queries in flight."""
LONG_PLAN = [(point, stage) for point in (0.2, 0.5, 0.8) for stage in STAGES]
"""Every stage killed at about 20, 50 and 80 % of the queries done: 12 kills."""
FAST_PLAN = [(0.2, "ingest"), (0.4, "graph"), (0.6, "llm"), (0.8, "calibrate")]
"""Every stage killed once (CI)."""


def run_chaos(
    pipe: TinyPipeline,
    plan: list[tuple[float, str]] = LONG_PLAN,
    held_down: str = "graph",
    settle_s: float = 240.0,
    quiet_slots: int = 2,
) -> ChaosResult:
    """Start the pipeline, stream, kill as planned (``(share of queries done, stage)``, in
    order; the first kill of ``held_down`` keeps it down past the re-send timeout instead), and
    count. The last ``quiet_slots`` exports come after everything else is done, one at a time
    with nothing killed: the latency from their step's close to the subscriber is measured on
    them. Leaves the pipeline stopped."""
    log: list[str] = []
    later = pipe.later_exports()
    quiet, later = later[len(later) - quiet_slots :], later[: len(later) - quiet_slots]
    started = time.time()
    watcher = Watcher(pipe)
    frozen = Watcher(pipe)
    up = pipe.geopol("pipeline", "up", "--wait", "180", timeout=300)
    if up.returncode != 0:
        raise RuntimeError(f"pipeline up failed:\n{up.stdout}\n{up.stderr}")
    frozen.proc.send_signal(signal.SIGSTOP)
    rss: dict[str, float] = {}

    def sample_rss() -> None:
        for stage in STAGES:
            pid = stage_pid(pipe, stage)
            peak = peak_rss_mb(pid) if pid else None
            if peak is not None:
                rss[stage] = max(rss.get(stage, 0.0), peak)

    def share_done() -> float:
        states = journal_states(pipe)
        return sum(s == "done" for s in states.values()) / max(len(states), 1)

    kills = in_flight_kills = 0
    first_kill_at: float | None = None
    held = False
    try:
        for point, stage in plan:
            wait_for(lambda p=point: share_done() >= p, settle_s, f"{point:.0%} of queries done")
            for _ in range(min(EXPORTS_PER_KILL, len(later))):  # new work in flight at the kill
                closed = closed_steps(pipe)
                pipe.deliver(later.pop(0))
                wait_for(lambda c=closed: closed_steps(pipe) > c, 60, "a delivered step closed")
            sample_rss()
            pid = stage_pid(pipe, stage)
            if pid is None:
                raise RuntimeError(f"chaos: {stage} is not up before its kill")
            pending = sum(s == "pending" for s in journal_states(pipe).values())
            in_flight_kills += pending > 0
            first_kill_at = first_kill_at or time.time()
            if stage == held_down and not held:  # down past the re-send timeout, then back
                held = True
                pipe.geopol("pipeline", "down", stage, timeout=60)
                time.sleep(2 * RESEND_TIMEOUT_S + 1)
                back = pipe.geopol("pipeline", "up", stage, "--wait", "120", timeout=180)
                if back.returncode != 0:
                    raise RuntimeError(f"chaos: {stage} did not come back:\n{back.stdout}")
                how = f"held down {2 * RESEND_TIMEOUT_S + 1:g}s"
            else:
                os.kill(pid, signal.SIGKILL)
                wait_for(
                    lambda s=stage, old=pid: stage_pid(pipe, s) not in {None, old},
                    120,
                    f"{stage} back after SIGKILL",
                )
                how = "SIGKILL"
            kills += 1
            log.append(f"{how} {stage} at {point:.0%}: {pending} queries pending")
        for export in later:
            pipe.deliver(export)
        slots = len(list(pipe.source.glob("*.export.CSV")))
        wait_for(lambda: closed_steps(pipe) >= slots, 120, "every delivered step closed")
        wait_for(
            lambda: all(s == "done" for s in journal_states(pipe).values()),
            settle_s,
            "every query done",
            poll_s=0.5,
        )
        before_quiet = set(journal_states(pipe))
        for export in quiet:  # one step at a time, nothing killed: the latency of a step
            closed = closed_steps(pipe)
            pipe.deliver(export)
            wait_for(lambda c=closed: closed_steps(pipe) > c, 60, "a quiet step closed")
            wait_for(
                lambda: all(s == "done" for s in journal_states(pipe).values()),
                settle_s,
                "the quiet step's queries done",
            )
        wanted = set(journal_states(pipe))
        wait_for(lambda: wanted <= {i for i, _ in watcher.seen}, 60, "every forecast watched")
        sample_rss()
    finally:
        watcher.stop()
        frozen.stop()
        pipe.geopol("pipeline", "down", timeout=120)
    states = journal_states(pipe)
    counts = Counter(i for i, _ in watcher.seen)
    times = sorted(t for _, t in watcher.seen)
    before_kill = [t for t in times if first_kill_at is None or t < first_kill_at]
    rate = (
        (len(before_kill) - 1) / (before_kill[-1] - before_kill[0])
        if len(before_kill) > 1 and before_kill[-1] > before_kill[0]
        else None
    )
    created = journal_created(pipe)
    arrived = {i: t for i, t in reversed(watcher.seen)}  # the first arrival of each
    latencies = [1000 * (arrived[i] - created[i]) for i in set(states) - before_quiet]
    return ChaosResult(
        queries=len(states),
        kills=kills,
        lost=len(set(states) - set(counts)),
        duplicated=sum(n > 1 for n in counts.values()),
        pending=sum(s != "done" for s in states.values()),
        first_forecast_s=(times[0] - started) if times else None,
        forecasts_per_s=rate,
        peak_rss_mb=rss,
        kills_with_work_in_flight=in_flight_kills,
        latency_ms=latencies,
        log=log,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make chaos",
        description="Stream queries through the tiny pipeline's four real stage processes, "
        "SIGKILL each stage in turn, and count what a subscriber received: ends with "
        "lost=N duplicated=N pending=N (exit 1 unless all are 0); numbers into bench.json.",
    )
    parser.add_argument(
        "--fast", action="store_true", help="kill each stage once instead of three times"
    )
    parser.add_argument(
        "--pipeline",
        type=Path,
        help="a tiny pipeline already written and bootstrapped there (default: build a larger "
        "one, >= 500 queries, in a temporary folder)",
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=REPO / report.REPORTS_DIR,
        help="folder of bench.json and bench.md (default: reports/)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """The chaos run as ``make chaos`` runs it; numbers into bench.json ``pipeline``."""
    args = _parser().parse_args(argv)
    plan = FAST_PLAN if args.fast else LONG_PLAN
    if args.pipeline is not None:
        result = run_chaos(TinyPipeline.load(args.pipeline), plan=plan)
    else:
        with tempfile.TemporaryDirectory(prefix="geopol-chaos-") as tmp:
            pipe = write_tiny_pipeline(Path(tmp), built_slots=22, queries_per_step=24)
            built = pipe.geopol("pipeline", "bootstrap", timeout=1800)
            if built.returncode != 0:
                print(built.stdout + built.stderr, file=sys.stderr)
                return 1
            result = run_chaos(pipe, plan=plan)
    for line in result.log:
        print(line)
    reports = args.reports
    chaos = {
        "queries": result.queries,
        "kills": result.kills,
        "lost": result.lost,
        "duplicated": result.duplicated,
        "pending": result.pending,
    }
    values = {
        **report.load(reports / "bench.json").get("pipeline", {}),
        "first_forecast_s": _round(result.first_forecast_s),
        "forecasts_per_s": _round(result.forecasts_per_s),
        "latency_ms_p50": _round(float(np.percentile(result.latency_ms, 50))),
        "latency_ms_p95": _round(float(np.percentile(result.latency_ms, 95))),
        "latency_queries": len(result.latency_ms),
        "peak_rss_mb": {k: round(v, 1) for k, v in result.peak_rss_mb.items()},
        "chaos": chaos,
    }
    host = machine.record(reports)
    markdown = (
        "## pipeline: chaos run and stream\n\n"
        "Reproduce: `make chaos` (tests/ops/chaos.py: the tiny pipeline of tests/ops, random "
        "tiny LLM). Every stage SIGKILLed at about 20/50/80 % of the queries done, the graph "
        f"once held down past the re-send timeout; CPU: {host['cpu']}, {host['cores']} cores."
        "\n\n| queries | kills | lost | duplicated | pending | first forecast s | "
        "forecasts/s | latency p50 / p95 ms |\n|---|---|---|---|---|---|---|---|\n"
        f"| {result.queries} | {result.kills} | {result.lost} | {result.duplicated} | "
        f"{result.pending} | {values['first_forecast_s']} | {values['forecasts_per_s']} | "
        f"{values['latency_ms_p50']} / {values['latency_ms_p95']} |"
    )
    report.write_section("pipeline", values, markdown, reports)
    print(
        f"queries={result.queries} kills={result.kills} "
        f"kills_with_work_in_flight={result.kills_with_work_in_flight} latency p50 {values['latency_ms_p50']} "
        f"ms p95 {values['latency_ms_p95']} ms ({len(result.latency_ms)} quiet queries)"
    )
    print(result.line())
    return 0 if result.lost == result.duplicated == result.pending == 0 else 1


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


if __name__ == "__main__":
    sys.exit(main())
