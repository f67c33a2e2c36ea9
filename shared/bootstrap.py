"""``geopol pipeline bootstrap``: build every artifact the stages serve, skipping what is current.

The chain is the one ``make run`` always ran: simulate a world (only when ``ingest.source`` is
missing) and ingest it, or, for live GDELT with ``ingest.live.bootstrap_days``, fetch and ingest
that much history (``geopol ingest backfill``); then export the store as a benchmark folder,
train the graph model, export its answers to the validation questions, train the LLM on them,
export and score live test questions, and fit the calibrator on those scores. Each step names
the one file that proves it done and the files it was made from; like make, a step runs when
that file is missing or older than one of them, and everything after it then runs too (its
inputs are newer). ``--force`` runs every step.

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

from shared.config import Config
from shared.live_state import history_path
from shared.stage_inputs import ARTIFACT_MANIFEST

STORE_LOG = "ingested.jsonl"  # the event store's commit log: one line per ingested source
DATASET_MARKER = "stat.txt"  # the last of the RE-Net files `dataset from-store` writes
TRAIN_EXPORT = "train"
CALIBRATE_EXPORT = "calibrate-live"

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
    """The steps that build what the config's stages serve, in order."""
    cfg = str(config_path)
    k = str(config.graph.candidates)
    graph = config.graph_artifact
    graph_manifest = graph / ARTIFACT_MANIFEST
    data = config.dataset_dir
    train_export = config.embeddings_dir / TRAIN_EXPORT
    live_export = config.embeddings_dir / CALIBRATE_EXPORT
    llm_manifest = config.llm_artifact / ARTIFACT_MANIFEST
    table = config.scores_dir / f"{CALIBRATE_EXPORT}-K{k}.safetensors"
    store_log = config.store_dir / STORE_LOG
    steps: list[Step] = []
    source = config.ingest.source
    live = config.ingest.live
    if live is not None and live.bootstrap_days:
        steps.append(
            Step("backfill", ("ingest", "backfill", "--config", cfg), history_path(config))
        )
    if config.ingest.live is None and source is not None:
        world = config.bootstrap.simulate
        steps.append(
            Step(
                "simulate",
                ("simulate", "--config", cfg, "--out", str(source), "--steps", str(world.steps),
                 "--actors", str(world.actors), "--events-per-step", str(world.events_per_step),
                 "--birth-rate", str(world.birth_rate),
                 "--seed", str(world.seed)),
                source,
            )
        )  # fmt: skip
        steps.append(
            Step(
                "ingest", ("ingest", "--config", cfg, "--source", str(source)), store_log, (source,)
            )
        )
    steps += [
        Step("dataset", ("dataset", "from-store", "--config", cfg), data / DATASET_MARKER, (store_log,)),
        Step("train graph", ("train", "graph", "--config", cfg), graph_manifest, (config.train_data,)),
        Step(
            "export train",
            ("export", "embeddings", "--artifact", str(graph), "--data", str(data), "--split",
             "valid", "--protocol", "tgl-mcq", "--k", k, "--inverse", "--out", str(train_export)),
            train_export / ARTIFACT_MANIFEST,
            (graph_manifest, data / DATASET_MARKER),
        ),
        Step(
            "train llm",
            ("train", "llm", "--config", cfg),
            llm_manifest,
            (config.llm.train.data or train_export,),
        ),
        Step(
            "export calibrate",
            ("export", "embeddings", "--artifact", str(graph), "--data", str(data), "--split",
             "test", "--protocol", "live", "--k", k, "--out", str(live_export)),
            live_export / ARTIFACT_MANIFEST,
            (graph_manifest, data / DATASET_MARKER),
        ),
        Step(
            "score calibrate",
            ("llm", "score", "--config", cfg, "--artifact", str(config.llm_artifact), "--data",
             str(live_export), "--sample", str(config.bootstrap.calibrate_questions), "--method",
             "tgl-llm", "--out", str(table)),
            table,
            (llm_manifest, live_export / ARTIFACT_MANIFEST),
        ),
        Step(
            "train calibrate",
            ("train", "calibrate", "--config", cfg, "--table", str(table)),
            config.calibrator_artifact / ARTIFACT_MANIFEST,
            (table,),
        ),
    ]  # fmt: skip
    return steps


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
