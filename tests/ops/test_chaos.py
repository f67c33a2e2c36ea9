"""The fast chaos run (CI), as a user starts it: ``make chaos CHAOS_ARGS=--fast`` on the tiny
pipeline this session built, its four real stages under ``geopol pipeline``, each killed once
while queries stream (tests/ops/chaos.py; plain ``make chaos`` is the long run).

It changes the tiny pipeline's store and journal, so it runs after test_bootstrap.py (pytest
runs files in name order), whose second bootstrap must find everything current.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tiny_pipeline import REPO, TinyPipeline, clean_env


def test_make_chaos_kills_every_stage_once_and_loses_nothing(
    tiny_built: tuple[TinyPipeline, str], tmp_path: Path
) -> None:
    pipe, _ = tiny_built
    reports = tmp_path / "reports"
    args = f"--fast --pipeline {pipe.root} --reports {reports}"
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO), "chaos", f"CHAOS_ARGS={args}"],
        capture_output=True,
        text=True,
        timeout=900,
        env=clean_env(),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "lost=0 duplicated=0 pending=0", output[-4000:]
    kills = [line for line in lines if re.match(r"(SIGKILL|held down \S+) \w+ at \d+%", line)]
    assert len(kills) == 4, output[-4000:]
    in_flight = re.search(r"kills_with_work_in_flight=(\d+)", done.stdout)
    assert in_flight and int(in_flight.group(1)) >= 3, output[-4000:]  # kills hit live work

    pipeline = json.loads((reports / "bench.json").read_text())["pipeline"]
    assert pipeline["chaos"]["kills"] == 4
    assert (pipeline["chaos"]["lost"], pipeline["chaos"]["duplicated"]) == (0, 0)
    assert pipeline["chaos"]["pending"] == 0
    assert pipeline["chaos"]["queries"] >= 200  # the backlog of 28 steps plus the 12 delivered
    assert set(pipeline["peak_rss_mb"]) == {"ingest", "graph", "llm", "calibrate"}
    assert pipeline["latency_queries"] >= 8 and pipeline["latency_ms_p50"] > 0  # quiet steps
    assert pipeline["first_forecast_s"] > 0
