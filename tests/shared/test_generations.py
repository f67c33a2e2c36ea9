"""Generations of served artifacts (shared/generations.py) and the retrainer that builds them
(shared/retrain.py), with each ``geopol`` step replaced by a recorder that writes its output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from shared import generations, retrain
from shared.bootstrap import BootstrapError, model_steps
from shared.config import Config, load_config
from shared.event_store import EventStore


def config_in(tmp_path: Path) -> tuple[Config, Path]:
    path = tmp_path / "c.yaml"
    path.write_text(f"name: t\npaths: {{run_dir: {tmp_path / 'run'}}}\n")
    return load_config(path, env={}), path


def write_dataset(folder: Path, last_t: int) -> None:
    """A two-entity benchmark folder whose data ends at step ``last_t``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entity2id.txt").write_text("A\t0\nB\t1\n")
    (folder / "relation2id.txt").write_text("r\t0\n")
    for split, t in (("train", 0), ("valid", 1), ("test", last_t)):
        (folder / f"{split}.txt").write_text(f"0\t0\t1\t{t}\n")


def store_closed_through(config: Config, step: int) -> None:
    EventStore(config.store_dir, step_minutes=config.ingest.mapping.step_minutes).close_through(
        step
    )


class Steps:
    """Runs a step by writing the file that proves it done; fails the step named ``fail``."""

    def __init__(self, config: Config, config_path: Path, fail: str | None = None) -> None:
        self.config, self.config_path, self.fail = config, config_path, fail
        self.ran: list[tuple[str, ...]] = []

    def __call__(self, args: Sequence[str]) -> int:
        self.ran.append(tuple(args))
        target = generations.current(self.config).number + 1
        built = generations.generation(self.config, target)
        init = generations.current(self.config).graph
        by_args = {
            s.args: s for s in model_steps(self.config, self.config_path, built, init_from=init)
        }
        step = by_args[tuple(args)]
        if step.name == self.fail:
            return 3
        if step.name == "dataset":  # as the real export: a benchmark folder the chain reads
            write_dataset(step.output.parent, 0)
        step.output.parent.mkdir(parents=True, exist_ok=True)
        step.output.write_text("made")
        return 0

    def names(self) -> list[str]:
        return [args[0] + " " + args[1] for args in self.ran]


def test_generation_0_is_the_configs_own_paths_until_a_retrain_is_promoted(
    tmp_path: Path,
) -> None:
    config, _ = config_in(tmp_path)
    served = generations.current(config)
    assert served.number == 0
    assert (served.graph, served.llm, served.calibrator) == (
        config.graph_artifact,
        config.llm_artifact,
        config.calibrator_artifact,
    )
    built = generations.generation(config, 1, store_through=41)
    generations.promote(config, built)
    again = generations.current(config)
    assert again == built and again.graph == tmp_path / "run" / "generations" / "1" / "regcn"
    generations.promote(config, generations.generation(config, 2, store_through=60))
    # the served one first, then every finished one newest first, generation 0 last
    assert [g.number for g in generations.finished(config)] == [2, 1, 0]
    assert generations.finished(config)[1].store_through == 41


def test_a_pointer_of_another_format_is_refused_naming_the_file(tmp_path: Path) -> None:
    config, _ = config_in(tmp_path)
    pointer = generations.root(config) / generations.POINTER
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({"format_version": 99, "generation": 1}))
    with pytest.raises(generations.GenerationError, match="current.json.*format_version is 99"):
        generations.current(config)
    pointer.write_text(json.dumps({"format_version": 1, "generation": 0}))
    with pytest.raises(generations.GenerationError, match="'generation' must be an integer >= 1"):
        generations.current(config)


def test_the_pointer_watch_reports_a_promotion_until_it_is_accepted(tmp_path: Path) -> None:
    config, _ = config_in(tmp_path)
    watch = generations.PointerWatch(config, 0)
    assert watch.changed() is None
    generations.promote(config, generations.generation(config, 1, store_through=5))
    promoted = watch.changed()
    assert promoted is not None and promoted.number == 1
    assert watch.changed() == promoted  # not accepted (its load failed): tried again
    watch.accept(promoted)
    assert watch.changed() is None


def test_by_upstream_finds_each_upstream_once_and_keeps_the_two_last_used() -> None:
    looked: list[str] = []

    def find(upstream: str) -> str | None:
        looked.append(upstream)
        return None if upstream == "unknown" else f"served-{upstream}"

    served = generations.ByUpstream("g0", "served-g0", find)
    assert served.get("g0") == "served-g0" and looked == []
    assert served.get("g1") == "served-g1" and served.get("g1") == "served-g1"
    assert looked == ["g1"] and served.newest == "served-g1"
    assert served.get("unknown") is None and served.get(None) is None
    assert served.get("g2") == "served-g2"  # g0 was used least recently: dropped
    assert served.get("g0") == "served-g0" and looked == ["g1", "unknown", "g2", "g0"]


def test_a_retrain_cut_at_the_llm_keeps_generation_0_served_and_the_rerun_resumes_it(
    tmp_path: Path,
) -> None:
    config, config_path = config_in(tmp_path)
    write_dataset(config.dataset_dir, last_t=9)
    store_closed_through(config, 12)
    cut = Steps(config, config_path, fail="train llm")
    with pytest.raises(BootstrapError, match="'train llm' failed"):
        retrain.build_next(config, config_path, runner=cut, say=lambda _: None)
    assert cut.names() == ["dataset from-store", "train graph", "export embeddings", "train llm"]
    graph_step = cut.ran[1]
    assert graph_step[graph_step.index("--init-from") + 1] == str(config.graph_artifact)
    assert generations.current(config).number == 0  # nothing promoted

    store_closed_through(config, 20)  # the store grew while the chain was cut
    rest = Steps(config, config_path)
    built = retrain.build_next(config, config_path, runner=rest, say=lambda _: None)
    assert rest.names() == ["train llm", "export embeddings", "llm score", "train calibrate"]
    assert generations.current(config) == built
    assert built.number == 1 and built.store_through == 12  # the data the chain began on


def test_watch_retrains_once_enough_steps_have_closed_since_the_served_data(
    tmp_path: Path,
) -> None:
    config, config_path = config_in(tmp_path)
    write_dataset(config.dataset_dir, last_t=9)
    store_closed_through(config, 12)
    steps = Steps(config, config_path)
    retrain.watch(config, config_path, every_steps=5, poll_s=0, runner=steps, rounds=1)
    state = retrain.read_state(config)
    assert steps.ran == [] and state is not None
    assert (state.state, state.served, state.steps_since) == ("waiting", 0, 3)

    store_closed_through(config, 14)
    retrain.watch(config, config_path, every_steps=5, poll_s=0, runner=steps, rounds=1)
    state = retrain.read_state(config)
    assert generations.current(config).number == 1 and steps.ran
    assert state is not None and (state.state, state.served, state.steps_since) == (
        "waiting",
        1,
        0,
    )


def test_watch_records_a_failed_chain_and_keeps_serving(tmp_path: Path) -> None:
    config, config_path = config_in(tmp_path)
    write_dataset(config.dataset_dir, last_t=0)
    store_closed_through(config, 3)
    failing = Steps(config, config_path, fail="train graph")
    retrain.watch(config, config_path, every_steps=1, poll_s=0, runner=failing, rounds=1)
    state = retrain.read_state(config)
    assert state is not None and (state.state, state.building) == ("failed", 1)
    assert "'train graph' failed" in str(state.last_error)
    assert generations.current(config).number == 0
