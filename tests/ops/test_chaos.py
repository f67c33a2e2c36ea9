"""The fast chaos run (CI): the real four stages of the tiny pipeline under ``geopol pipeline``,
each killed once while queries stream; ``make chaos`` is the long run (tests/ops/chaos.py).

It changes the tiny pipeline's store and journal, so it runs after test_bootstrap.py (pytest
runs files in name order), whose second bootstrap must find everything current.
"""

from __future__ import annotations

from chaos import run_chaos
from tiny_pipeline import TinyPipeline

FAST_PLAN = [(0.2, "ingest"), (0.4, "graph"), (0.6, "llm"), (0.8, "calibrate")]


def test_every_stage_killed_once_loses_nothing_and_publishes_nothing_twice(
    tiny_built: tuple[TinyPipeline, str],
) -> None:
    pipe, _ = tiny_built
    result = run_chaos(pipe, plan=FAST_PLAN)
    assert result.kills == 4
    assert result.kills_with_work_in_flight >= 3, result.log  # each kill should hit live work
    assert (result.lost, result.duplicated, result.pending) == (0, 0, 0), result.log
    assert result.queries >= 200  # the backlog of 28 steps plus the 12 delivered ones
    assert set(result.peak_rss_mb) == {"ingest", "graph", "llm", "calibrate"}
    assert len(result.latency_ms) >= 8 and min(result.latency_ms) > 0  # two quiet steps' queries
