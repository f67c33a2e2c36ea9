"""``geopol pipeline bootstrap`` (``make run``) and the bootstrap ``pipeline up`` runs first.

The steps and their skipping are checked with a runner that only writes each step's output; the
whole chain runs for real once, on the tiny pipeline (tests/ops/conftest.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from tiny_pipeline import STAGES, TinyPipeline

from shared.bootstrap import BootstrapError, Step, bootstrap, plan, why_stale
from shared.config import load_config
from shared.live_state import history_path
from shared.stage_inputs import missing_input

NAMES = [
    "simulate",
    "ingest",
    "dataset",
    "train graph",
    "export train",
    "train llm",
    "export calibrate",
    "score calibrate",
    "train calibrate",
]


class Recorder:
    """A runner that writes each step's output, as its command would, and records the order."""

    def __init__(self, steps: Sequence[Step], fail: str | None = None) -> None:
        self.by_args = {step.args: step for step in steps}
        self.fail = fail
        self.ran: list[str] = []

    def __call__(self, args: Sequence[str]) -> int:
        step = self.by_args[tuple(args)]
        self.ran.append(step.name)
        if step.name == self.fail:
            return 3
        step.output.parent.mkdir(parents=True, exist_ok=True)
        if step.name == "simulate":
            step.output.mkdir(exist_ok=True)
            (step.output / "a.export.CSV").write_text("x")
        else:
            step.output.write_text("made")
        return 0


def _steps(tmp_path: Path) -> list[Step]:
    config_path = tmp_path / "c.yaml"
    config_path.write_text(f"name: t\npaths: {{run_dir: {tmp_path / 'run'}}}\n")
    config = load_config(config_path, env={})
    config = config.model_copy(
        update={"ingest": config.ingest.model_copy(update={"source": tmp_path / "run" / "sim"})}
    )
    return plan(config, config_path)


def test_the_chain_runs_in_order_then_is_current_and_a_newer_input_reruns_what_follows(
    tmp_path: Path,
) -> None:
    steps = _steps(tmp_path)
    assert [s.name for s in steps] == NAMES
    said: list[str] = []
    first = Recorder(steps)
    assert bootstrap(steps, runner=first, say=said.append) == 9
    assert first.ran == NAMES
    assert said[0].startswith("bootstrap [1/9] simulate: ") and "is missing" in said[0]
    again = Recorder(steps)
    assert bootstrap(steps, runner=again, say=said.append) == 0 and again.ran == []
    assert said[-1].startswith("bootstrap: 0 step(s) run, 9 current")
    graph = next(s for s in steps if s.name == "train graph").output
    later = time.time() + 5
    os.utime(graph, (later, later))  # a retrained graph model
    assert "is newer than" in why_stale(next(s for s in steps if s.name == "export train"))
    rerun = Recorder(steps)
    bootstrap(steps, runner=rerun, say=said.append)
    assert rerun.ran == ["export train", "train llm", "export calibrate", "score calibrate",
                         "train calibrate"]  # fmt: skip
    forced = Recorder(steps)
    assert bootstrap(steps, force=True, runner=forced, say=said.append) == 9


def test_a_failed_step_names_itself_and_keeps_what_came_before(tmp_path: Path) -> None:
    steps = _steps(tmp_path)
    runner = Recorder(steps, fail="train llm")
    with pytest.raises(BootstrapError, match=r"step 6/9 'train llm' failed \(exit 3"):
        bootstrap(steps, runner=runner, say=lambda _: None)
    assert all(s.output.exists() for s in steps[:5]) and not steps[5].output.exists()
    resumed = Recorder(steps)
    bootstrap(steps, runner=resumed, say=lambda _: None)
    assert resumed.ran == NAMES[5:]


def test_a_step_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    steps = _steps(tmp_path)[:1]
    with pytest.raises(BootstrapError, match="did not write"):
        bootstrap(steps, runner=lambda args: 0, say=lambda _: None)


def test_bootstrap_builds_what_every_stage_serves_and_a_second_run_skips_it(
    tiny_built: tuple[TinyPipeline, str],
) -> None:
    pipe, first = tiny_built
    config = load_config(pipe.config, env={})
    assert [missing_input(config, stage) for stage in STAGES] == [None] * 4
    assert "bootstrap [1/9] simulate: current" in first  # the test seeded ingest.source
    assert "bootstrap: 8 step(s) run, 1 current" in first
    again = pipe.geopol("pipeline", "bootstrap")
    assert again.returncode == 0, again.stderr
    assert "bootstrap: 0 step(s) run, 9 current" in again.stdout


def test_up_bootstraps_a_stage_that_is_not_built(tmp_path: Path) -> None:
    """``up`` on a config whose ingest source is missing simulates it first; a world of two
    slots cannot train a graph model, so the bootstrap stops ``up`` with that step's name and
    keeps the steps before it."""
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: t\npaths: {{run_dir: {tmp_path / 'run'}}}\n"
        f"ingest: {{source: {tmp_path / 'exports'}}}\n"
        "bootstrap: {simulate: {steps: 2, actors: 4, events_per_step: 2.0}}\n"
        "stages: {ingest: {}}\n"
    )
    done = TinyPipeline(tmp_path, config, tmp_path / "run", tmp_path, tmp_path, {}, "", "")
    result = done.geopol("pipeline", "up", timeout=300)
    assert "not built: ingest; bootstrapping first" in result.stdout
    assert "bootstrap [1/9] simulate:" in result.stdout
    assert result.returncode != 0  # a 2-slot world has no test split to train on
    assert "geopol pipeline up: step 4/9 'train graph' failed" in result.stderr
    assert "the 3 step(s) before it are kept" in result.stderr
    assert (tmp_path / "run" / "datasets" / "SIM" / "stat.txt").is_file()


def test_a_live_config_with_bootstrap_days_backfills_its_history_first(tmp_path: Path) -> None:
    config_path = tmp_path / "live.yaml"
    config_path.write_text(
        f"name: t\npaths: {{run_dir: {tmp_path / 'run'}}}\n"
        "ingest: {live: {base_url: 'http://127.0.0.1:1/gdeltv2', bootstrap_days: 3}}\n"
    )
    config = load_config(config_path, env={})

    steps = plan(config, config_path)

    assert [s.name for s in steps] == ["backfill", *NAMES[2:]]
    assert steps[0].args == ("ingest", "backfill", "--config", str(config_path))
    assert steps[0].output == history_path(config)
    without = config.model_copy(
        update={"ingest": config.ingest.model_copy(update={"live": None, "source": None})}
    )
    assert "backfill" not in [s.name for s in plan(without, config_path)]
