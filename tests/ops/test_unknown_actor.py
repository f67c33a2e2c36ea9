"""An actor first seen after the graph model was trained, through the four real stages: its
queries get forecasts that say the model does not know it, the work items finish, and
``geopol status`` counts it in the graph's ``oov`` column (shared/abstention.py).

Runs after test_chaos.py (name order), on the same tiny pipeline: every simulated slot is in
the store by then, so the two slots here are new, made from the last one with fresh event ids
and times; in the first, every event's first actor is a code the store has never held.
"""

from __future__ import annotations

from pathlib import Path

from chaos import Watcher, closed_steps, journal_states, wait_for
from tiny_pipeline import TinyPipeline, next_slot

NEW_ACTOR = "ZZZNEW"


def test_an_actor_the_model_never_saw_gets_a_forecast_saying_so(
    tiny_built: tuple[TinyPipeline, str], tmp_path: Path
) -> None:
    pipe, _ = tiny_built
    last = sorted(pipe.source.glob("*.export.CSV"))[-1]
    unknown_slot = next_slot(last, tmp_path, 15, 10**9, NEW_ACTOR)
    closing_slot = next_slot(last, tmp_path, 30, 2 * 10**9, None)
    before = set(journal_states(pipe))
    watcher = Watcher(pipe)
    try:
        up = pipe.geopol("pipeline", "up", "--no-bootstrap", "--wait", "180", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        closed = closed_steps(pipe)
        for export in (unknown_slot, closing_slot):
            pipe.deliver(export)
        wait_for(lambda: closed_steps(pipe) >= closed + 2, 90, "both new slots closed")
        new = set(journal_states(pipe)) - before
        assert new, "closing the new actor's slot journaled no query"
        wait_for(
            lambda: all(journal_states(pipe)[i] == "done" for i in new), 120, "new queries done"
        )
        wait_for(lambda: new <= {f["id"] for f in watcher.forecasts}, 60, "forecasts watched")
        status = pipe.geopol("status", timeout=60)
    finally:
        watcher.stop()
        pipe.geopol("pipeline", "down", timeout=120)
    got = [f for f in watcher.forecasts if f["id"] in new]
    assert len({f["id"] for f in got}) == len(new)
    # the step before the new actor's closes too: its queries are about known actors
    unknown = [f for f in got if f["query"]["subject_name"] == NEW_ACTOR]
    assert unknown and len(unknown) < len(got)
    for forecast in unknown:
        assert (forecast["unknown"], forecast["candidates"], forecast["other"]) == (
            ["subject"],
            [],
            None,
        )
        assert forecast["lineage"]["graph_artifact"] and forecast["lineage"]["llm_artifact"]
    for forecast in got:
        if forecast not in unknown:  # ranked as ever, never with the new actor as a candidate
            assert "unknown" not in forecast and forecast["candidates"]
            assert NEW_ACTOR not in [c["name"] for c in forecast["candidates"]]
    (graph_row,) = [r for r in status.stdout.splitlines() if r.startswith("graph")]
    assert int(graph_row.split()[5]) >= len(unknown), status.stdout
    assert "unknown to the model:" in status.stdout and "subject" in status.stdout
