"""``geopol pipeline bootstrap``: build every artifact the stages serve, skipping what is current.

The chain is the one ``make run`` always ran: simulate a world (only when ``ingest.source`` is
missing) and ingest it, or, for live GDELT with ``ingest.live.bootstrap_days``, fetch and ingest
that much history (``geopol ingest backfill``); then export the store as a benchmark folder,
train the graph model, export its answers to the validation questions, train the LLM on them,
export and score live test questions, and fit the calibrator on those scores. Each step names
the one file that proves it done and the files it was made from; like make, a step runs when
that file is missing or older than one of them, and everything after it then runs too (its
inputs are newer). ``--force`` runs every step.

The chain from the store on (:func:`model_steps`) is also what ``geopol retrain``
(shared/retrain.py) runs to build a later generation in its own folder.

Each step is the ``geopol`` command a person would type, run as a child process with this
terminal, so its own progress bar shows; a step that fails stops the chain with a line naming it,
and what the finished steps built is kept for the next try. shared/ may not import a stage, and
the commands are the interface anyway.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared import generations
from shared.config import Config
from shared.live_state import history_path
from shared.stage_inputs import ARTIFACT_MANIFEST

STORE_LOG = "ingested.jsonl"  # the event store's commit log: one line per ingested source
DATASET_MARKER = "stat.txt"  # the last of the RE-Net files `dataset from-store` writes

Runner = Callable[[Sequence[str]], int]
"""Runs ``geopol ARGS...`` and returns its exit status."""


class BootstrapError(RuntimeError):
    """A step failed or cannot run; the message names it."""


@dataclass(frozen=True)
class Step:
    """One ``geopol`` command: what proves it done (``output``) and what it is made from."""

    name: str
    args: tuple[str, ...]
    output: Path
    inputs: tuple[Path, ...] = ()


def plan(config: Config, config_path: Path) -> list[Step]:
    """The steps that build what the config's stages serve (generation 0), in order."""
    return source_steps(config, config_path) + model_steps(
        config, config_path, generations.generation(config, 0)
    )


def source_steps(config: Config, config_path: Path) -> list[Step]:
    """The steps that fill the event store: backfill live history, or simulate and ingest."""
    cfg = str(config_path)
    source = config.ingest.source
    live = config.ingest.live
    if live is not None and live.bootstrap_days:
        return [Step("backfill", ("ingest", "backfill", "--config", cfg), history_path(config))]
    if live is not None or source is None:
        return []
    world = config.bootstrap.simulate
    return [
        Step(
            "simulate",
            ("simulate", "--config", cfg, "--out", str(source), "--steps", str(world.steps),
             "--actors", str(world.actors), "--events-per-step", str(world.events_per_step),
             "--birth-rate", str(world.birth_rate), "--seed", str(world.seed)),
            source,
        ),
        Step("ingest", ("ingest", "--config", cfg, "--source", str(source)),
             config.store_dir / STORE_LOG, (source,)),
    ]  # fmt: skip


def model_steps(
    config: Config, config_path: Path, target: generations.Generation, init_from: Path | None = None
) -> list[Step]:
    """The steps from the event store to a calibrator, writing generation ``target``: export the
    store as a benchmark folder, train the graph model (warm-started from ``init_from`` when
    given), export its answers, train the LLM on them, score live questions and fit the
    calibrator on those scores. Generation 0 keeps the config's own paths and training data."""
    cfg = str(config_path)
    k = str(config.graph.candidates)
    graph, data = target.graph, target.dataset
    graph_manifest = graph / ARTIFACT_MANIFEST
    llm_manifest = target.llm / ARTIFACT_MANIFEST
    table = target.scores / f"{generations.CALIBRATE_EXPORT}-K{k}.safetensors"
    first = target.number == 0
    dataset_out = config.dataset_dir if first else data  # gen 0 may train on graph.train.data
    llm_data = (config.llm.train.data if first else None) or target.train_export
    warm = () if init_from is None else ("--init-from", str(init_from))
    return [
        # a retrained generation keeps the export it began with: a chain cut and resumed
        # finishes on that data, not on a store that has grown since
        Step("dataset", ("dataset", "from-store", "--config", cfg, "--out", str(dataset_out)),
             dataset_out / DATASET_MARKER, (config.store_dir / STORE_LOG,) if first else ()),
        Step("train graph", ("train", "graph", "--config", cfg, "--data", str(data), "--out",
                             str(graph), *warm),
             graph_manifest, (data,)),
        Step(
            "export train",
            ("export", "embeddings", "--artifact", str(graph), "--data", str(data), "--split",
             "valid", "--protocol", "tgl-mcq", "--k", k, "--inverse", "--out",
             str(target.train_export)),
            target.train_export / ARTIFACT_MANIFEST,
            (graph_manifest, data / DATASET_MARKER),
        ),
        Step(
            "train llm",
            ("train", "llm", "--config", cfg, "--data", str(llm_data), "--out", str(target.llm)),
            llm_manifest,
            (llm_data,),
        ),
        Step(
            "export calibrate",
            ("export", "embeddings", "--artifact", str(graph), "--data", str(data), "--split",
             "test", "--protocol", "live", "--k", k, "--out", str(target.live_export)),
            target.live_export / ARTIFACT_MANIFEST,
            (graph_manifest, data / DATASET_MARKER),
        ),
        Step(
            "score calibrate",
            ("llm", "score", "--config", cfg, "--artifact", str(target.llm), "--data",
             str(target.live_export), "--sample", str(config.bootstrap.calibrate_questions),
             "--method", "tgl-llm", "--out", str(table)),
            table,
            (llm_manifest, target.live_export / ARTIFACT_MANIFEST),
        ),
        Step(
            "train calibrate",
            ("train", "calibrate", "--config", cfg, "--table", str(table), "--out",
             str(target.calibrator)),
            target.calibrator / ARTIFACT_MANIFEST,
            (table,),
        ),
    ]  # fmt: skip


def newest_mtime(path: Path) -> float | None:
    """The modification time of a file, or of the newest file under a folder; None if missing."""
    if path.is_file():
        return path.stat().st_mtime
    if not path.is_dir():
        return None
    times = [p.stat().st_mtime for p in path.rglob("*") if p.is_file()]
    return max(times, default=path.stat().st_mtime)


def why_stale(step: Step) -> str | None:
    """Why the step must run (its output missing, or an input newer), or None when current."""
    if not step.output.exists():
        return f"{step.output} is missing"
    made = newest_mtime(step.output)
    assert made is not None
    for source in step.inputs:
        changed = newest_mtime(source)
        if changed is not None and changed > made:
            return f"{source} is newer than {step.output}"
    return None


def geopol(args: Sequence[str]) -> int:
    """Run ``geopol ARGS`` as a child with this terminal (its progress bars show)."""
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], check=False).returncode


def bootstrap(
    steps: Sequence[Step],
    force: bool = False,
    runner: Runner = geopol,
    say: Callable[[str], None] = print,
) -> int:
    """Run the steps that are stale (every one with ``force``); how many ran. A failure raises
    :class:`BootstrapError` naming the step; the outputs of the steps before it are kept."""
    started = time.monotonic()
    ran = 0
    for number, step in enumerate(steps, 1):
        head = f"bootstrap [{number}/{len(steps)}] {step.name}"
        reason = "--force" if force else why_stale(step)
        if reason is None:
            say(f"{head}: current ({step.output})")
            continue
        say(f"{head}: {reason}")
        say(f"  $ geopol {' '.join(step.args)}")
        status = runner(step.args)
        if status != 0:
            raise BootstrapError(
                f"step {number}/{len(steps)} {step.name!r} failed (exit {status}; its output is "
                f"above); the {number - 1} step(s) before it are kept, run again once it is fixed"
            )
        if not step.output.exists():
            raise BootstrapError(
                f"step {step.name!r} succeeded but did not write {step.output}, the file that "
                "proves it done"
            )
        os.utime(step.output)  # done now, even when the command had nothing new to write
        ran += 1
    say(
        f"bootstrap: {ran} step(s) run, {len(steps) - ran} current, "
        f"in {time.monotonic() - started:.0f}s"
    )
    return ran
