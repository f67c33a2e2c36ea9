"""``geopol retrain`` beside the four real stages of the tiny pipeline (shared/retrain.py).

The retrainer is SIGKILLed halfway through building generation 1: nothing it had built is served,
and the forecasts of the next step still name generation 0's artifacts. Run again, it resumes the
chain (the finished steps are current) and promotes generation 1; the stages switch at the next
step boundary, with steps delivered back to back so queries are in flight across the switch.
Every query gets exactly one forecast, each forecast is made by one generation's whole chain
(graph, llm and calibrator artifacts of the same generation), and the last step's are generation
1's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from chaos import Watcher, closed_steps, journal_states, wait_for
from tiny_pipeline import GEOPOL, REPO, TinyPipeline, clean_env, next_slot

from shared.manifest import manifest_id

FIRST_OFFSET = 3 * 10**9  # event ids of the slots made here (test_unknown_actor uses 1e9, 2e9)


def lineage_of(run_dir: Path, generation: str | None) -> tuple[str, str, str]:
    """(graph, llm, calibrator) artifact ids of generation 0 (None) or of a retrained one."""
    if generation is None:
        folders = [run_dir / "artifacts" / kind / "SIM" for kind in ("regcn", "llm", "calibrate")]
    else:
        base = run_dir / "generations" / generation
        folders = [base / kind for kind in ("regcn", "llm", "calibrate")]
    ids = [manifest_id(json.loads((f / "manifest.json").read_text())) for f in folders]
    return ids[0], ids[1], ids[2]


def chain(forecast: dict) -> tuple[str, str, str]:
    lineage = forecast["lineage"]
    return lineage["graph_artifact"], lineage["llm_artifact"], lineage["calibrator_artifact"]


class Slots:
    """New export slots after the last one in the watched folder, each with fresh event ids."""

    def __init__(self, pipe: TinyPipeline, out_dir: Path) -> None:
        self.pipe, self.out_dir, self.made = pipe, out_dir, 0

    def deliver(self, count: int) -> set[str]:
        """Deliver ``count`` slots back to back; the query ids their closing journals."""
        before = set(journal_states(self.pipe))
        closed = closed_steps(self.pipe)
        for _ in range(count):
            last = sorted(self.pipe.source.glob("*.export.CSV"))[-1]
            offset = FIRST_OFFSET + self.made * 10**9
            self.pipe.deliver(next_slot(last, self.out_dir, 15, offset, None))
            self.made += 1
        wait_for(lambda: closed_steps(self.pipe) >= closed + count, 120, f"{count} slot(s) closed")
        new = set(journal_states(self.pipe)) - before
        assert new, "closing the delivered slots journaled no query"
        return new


def retrain(pipe: TinyPipeline) -> subprocess.Popen[str]:
    """``geopol retrain`` as a process in its own group (so a kill takes its steps with it)."""
    return subprocess.Popen(
        [*GEOPOL, "retrain", "--config", str(pipe.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=clean_env(PYTHONUNBUFFERED="1"),  # its step lines arrive as they are printed
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    """SIGKILL the process group once ``marker`` is printed; what it printed."""
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    wait_for(lambda: any(marker in line for line in lines) or proc.poll() is not None,
             timeout_s, f"retrain printing {marker!r}")  # fmt: skip
    assert proc.poll() is None, f"retrain ended before {marker!r}:\n{''.join(lines)}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    reader.join(10)
    return "".join(lines)


def test_a_killed_retrain_changes_nothing_served_and_a_finished_one_swaps_at_a_step_boundary(
    tiny_built: tuple[TinyPipeline, str], tmp_path: Path
) -> None:
    pipe, _ = tiny_built
    pointer = pipe.run_dir / "generations" / "current.json"
    old = lineage_of(pipe.run_dir, None)
    slots = Slots(pipe, tmp_path)
    watcher = Watcher(pipe)
    queries: set[str] = set()

    def forecasts_of(ids: set[str]) -> list[dict]:
        wait_for(lambda: all(journal_states(pipe)[i] == "done" for i in ids), 120, "queries done")
        wait_for(lambda: ids <= {f["id"] for f in watcher.forecasts}, 60, "forecasts watched")
        return [f for f in watcher.forecasts if f["id"] in ids]

    try:
        up = pipe.geopol("pipeline", "up", "--no-bootstrap", "--wait", "180", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        queries |= slots.deliver(1)  # a closed step for the retrain to begin from

        # killed while training the LLM: generation 1's graph is built, nothing is promoted
        printed = kill_when(retrain(pipe), "] train llm: ", 300)
        assert "bootstrap [2/7] train graph" in printed and "--init-from" in printed
        assert not pointer.exists()
        during = slots.deliver(1)
        queries |= during
        assert {chain(f) for f in forecasts_of(during)} == {old}

        # run again: the finished steps are current, the chain ends, generation 1 is promoted
        again = pipe.geopol("retrain", timeout=600)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "bootstrap [2/7] train graph: current" in again.stdout
        assert json.loads(pointer.read_text())["generation"] == 1
        new = lineage_of(pipe.run_dir, "1")
        assert new[0] != old[0] and new[1] != old[1] and new[2] != old[2]

        across = slots.deliver(2)  # back to back: the switch happens with queries in flight
        queries |= across
        after = slots.deliver(1)
        queries |= after
        got = forecasts_of(queries)
        status = pipe.geopol("status", timeout=60)
    finally:
        watcher.stop()
        pipe.geopol("pipeline", "down", timeout=120)

    ids = [f["id"] for f in got]
    assert sorted(ids) == sorted(queries)  # each query once: none lost, none published twice
    assert {chain(f) for f in got} <= {old, new}  # every forecast made by one whole chain
    assert {chain(f) for f in got if f["id"] in after} == {new}
    assert "generation: 1 served" in status.stdout, status.stdout
