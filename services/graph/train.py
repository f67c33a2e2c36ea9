"""``geopol train graph``: train RE-GCN on a temporal-KG benchmark directory.

This module imports no JAX: ``main`` first sets the process's accelerator memory budget
(``jax_env.configure``, DESIGN.md invariant 3) and only then imports the JAX modules that build
and train the model (``snapshots``, ``trainer``). The ``geopol`` CLI may therefore import it at
any time. The training loop itself lives in ``trainer`` (the ``train.py`` of a Flax example);
this file is the flag parsing of its ``main.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from services.graph import jax_env
from services.graph.artifact import ArtifactError
from services.graph.artifact import load as load_artifact
from services.graph.config import ModelConfig, TrainConfig
from services.graph.vocab_growth import Growth, VocabularyGrowthError, check_extends
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.log import configure_logging
from shared.manifest import differences
from shared.tkg_dataset import TkgDataset, TkgFormatError, load_tkg

STATIC_GRAPH_FILE = "e-w-graph.txt"
log = structlog.get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol train graph",
        description="Train RE-GCN (Li et al., SIGIR 2021) on a TKG benchmark folder "
        "(train/valid/test.txt, entity2id/relation2id, e-w-graph.txt for the static graph). "
        "Keeps the epoch with the best validation filtered MRR and writes it as a checked "
        "artifact (manifest.json + safetensors) to --out, with a checkpoint after every epoch. "
        "Settings come from the config's graph.train section; each flag overrides one.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="pipeline config whose graph.train section gives the defaults "
        "(default configs/default.yaml)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="benchmark folder, e.g. .../tkg/ICEWS14 (default: graph.train.data, else "
        "RUN_DIR/datasets/DATASET exported from the store)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="artifact folder (default: the config's graph artifact for the config's data, "
        "RUN_DIR/artifacts/regcn/<data folder name> for --data)",
    )
    parser.add_argument("--epochs", type=int, help="maximum epochs (default graph.train.epochs)")
    parser.add_argument(
        "--patience",
        type=int,
        help="stop after this many epochs without a better validation MRR "
        "(default graph.train.patience)",
    )
    parser.add_argument(
        "--history", type=int, help="history length k (default graph.train.history)"
    )
    parser.add_argument("--dim", type=int, help="embedding size (default graph.train.dim)")
    parser.add_argument(
        "--blocks",
        type=int,
        help="blocks of the static R-GCN weights; divides --dim (default graph.train.blocks)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of initialisation, shuffling and dropout (default graph.train.seed)",
    )
    parser.add_argument(
        "--mem-fraction",
        type=float,
        help="share of accelerator memory this process may use (default graph.mem_fraction)",
    )
    parser.add_argument(
        "--static",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"use the static entity-word graph ({STATIC_GRAPH_FILE}; default: graph.train."
        "static, else on when the folder has it)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run checkpointed in --out after its last finished epoch, with the "
        "settings it was started with (recorded in the checkpoint, not the config's); "
        "--epochs and --patience may be raised to extend a finished run",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="ARTIFACT",
        help="warm start: begin from the parameters of this artifact (same model settings; not "
        "the --out folder) with a fresh optimiser. The data's vocabulary may extend the "
        "artifact's (a live store's later export: its first names are the artifact's): known "
        "rows are copied, new ones initialised. Its validation score is the bar to beat: until "
        "an epoch does, --out holds it with best_epoch -1. The manifest records where it came "
        "from and the vocabulary sizes before and after (train_config.init_vocabulary)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none is drawn when stderr is not a terminal)",
    )
    return parser


def has_static_graph(data: Path) -> bool:
    """Whether the benchmark folder has the entity-word graph (then the static graph is used)."""
    return (data / STATIC_GRAPH_FILE).is_file()


def request_from(args: argparse.Namespace, config: Config) -> TrainRequest:
    """The request the flags ask for, each missing flag filled from ``config.graph.train``, or,
    with ``--resume``, from the settings the checkpointed run was started with: a run begun by
    ``make train`` (configs/benchmark.yaml) continues as that run, not with default.yaml's.

    Call after ``jax_env.configure`` when resuming (reading the checkpoint imports JAX).
    """
    settings = config.graph.train
    data = args.data or config.train_data
    if args.out is not None:
        out = args.out
    elif args.data is None:
        out = config.graph_artifact
    else:
        out = config.regcn_root / args.data.resolve().name
    static = args.static if args.static is not None else settings.static
    base = {
        "epochs": settings.epochs,
        "patience": settings.patience,
        "history": settings.history,
        "dim": settings.dim,
        "blocks": settings.blocks,
        "seed": settings.seed,
        "static": static if static is not None else has_static_graph(data),
    }
    progress = read_checkpoint(out) if args.resume else None
    if progress is not None:
        base |= settings_of(progress)
    flags = {name: getattr(args, name) for name in base}
    return TrainRequest(
        data=data,
        out=out,
        **{name: _given(flags[name], value) for name, value in base.items()},
        progress=not args.no_progress and sys.stderr.isatty(),
        resume=args.resume,
        init_from=args.init_from,
    )


def read_checkpoint(out: Path) -> dict[str, Any] | None:
    """The progress document of the run checkpointed in ``out``, None when there is none; an
    unreadable one is a TrainError saying how to start afresh. Imports JAX: call after
    ``jax_env.configure``."""
    from services.graph import checkpoint

    if not checkpoint.path_in(out).is_dir():
        return None
    try:
        return checkpoint.read_progress(out)
    except checkpoint.CheckpointError as exc:
        raise TrainError(f"{exc}; remove {checkpoint.path_in(out)} to train afresh") from exc


def settings_of(progress: dict[str, Any]) -> dict[str, Any]:
    """The settings a checkpointed run was started with, as :class:`TrainRequest` fields."""
    model_cfg, train_cfg = progress["model_config"], progress["train_config"]
    return {
        "epochs": train_cfg["epochs"],
        "patience": train_cfg["patience"],
        "history": model_cfg["history"],
        "dim": model_cfg["dim"],
        "blocks": model_cfg["num_blocks"],
        "seed": train_cfg["seed"],
        "static": model_cfg["use_static"],
    }


def _given(flag: float | None, setting: float) -> Any:
    return setting if flag is None else flag


@dataclass(frozen=True)
class TrainRequest:
    """What to train: the flags of ``geopol train graph`` (also used by ``geopol eval``)."""

    data: Path
    out: Path | None
    epochs: int = TrainConfig.epochs
    patience: int = TrainConfig.patience
    history: int = ModelConfig.history
    dim: int = ModelConfig.dim
    blocks: int = ModelConfig.num_blocks
    seed: int = TrainConfig.seed
    static: bool = True
    progress: bool = True
    resume: bool = False
    init_from: Path | None = None


class TrainError(ValueError):
    """The request cannot be trained (missing file, inconsistent sizes); the message says why."""


def train_graph(request: TrainRequest, dataset: TkgDataset) -> Any:
    """Train RE-GCN as requested and return the trainer's result.

    Call only after ``jax_env.configure``: this is where the JAX modules are first imported.
    """
    static_path = request.data / STATIC_GRAPH_FILE
    if request.static and not static_path.is_file():
        raise TrainError(f"{static_path} not found (use --no-static)")

    from services.graph import checkpoint, snapshots, trainer  # JAX starts here, after configure

    static_triples = snapshots.load_static_triples(static_path) if request.static else None
    num_words, num_kinds = snapshots.static_counts(static_triples) if request.static else (0, 0)
    try:
        model_cfg = ModelConfig(
            num_entities=dataset.num_entities,
            num_relations=dataset.num_relations,
            dim=request.dim,
            history=request.history,
            use_static=request.static,
            num_words=num_words,
            num_static_relations=num_kinds,
            num_blocks=request.blocks,
        )
        train_cfg = TrainConfig(
            epochs=request.epochs,
            patience=request.patience,
            seed=request.seed,
            init_from=str(request.init_from or ""),
        )
    except ValueError as exc:
        raise TrainError(str(exc)) from exc
    if request.resume and request.init_from is not None:
        raise TrainError("--resume continues a run as it was started; leave out --init-from")
    if request.resume and (request.out is None or not checkpoint.exists(request.out)):
        raise TrainError(
            f"--resume: no checkpoint in {request.out} to continue (train without --resume)"
        )
    if not request.resume and request.out is not None and checkpoint.exists(request.out):
        log.warning("starting_afresh", checkpoint=str(checkpoint.path_in(request.out)))
    init = None
    if request.init_from is not None:
        if request.out is not None and request.init_from.resolve() == request.out.resolve():
            raise TrainError(
                f"--init-from {request.init_from} is the --out folder: the run would overwrite "
                "the model it starts from; copy it elsewhere first"
            )
        params, stats, growth = _initial_parameters(request.init_from, model_cfg, dataset)
        init = (params, stats)
        train_cfg = replace(train_cfg, init_vocabulary=growth.to_dict())
    try:
        if request.resume:
            _warn_if_shortened(request.epochs, checkpoint.read_progress(request.out))
        return trainer.train_and_evaluate(
            dataset,
            model_cfg,
            train_cfg,
            static_triples,
            request.out,
            progress=request.progress,
            resume=request.resume,
            init=init,
        )
    except checkpoint.CheckpointError as exc:
        raise TrainError(str(exc)) from exc


def _warn_if_shortened(epochs: int, progress: dict[str, Any]) -> None:
    """Say so when a resumed leg asks for fewer epochs than the run was started with: the loop
    would otherwise stop early (or run nothing) without a word."""
    started, done = progress["train_config"]["epochs"], progress["epochs_done"]
    if epochs >= started:
        return
    outcome = "nothing is left to train" if epochs <= done else f"it stops after epoch {epochs}"
    log.warning(
        "resume_with_fewer_epochs",
        epochs=epochs,
        started_with=started,
        epochs_done=done,
        note=f"--epochs {epochs} is fewer than the {started} the run was started with "
        f"({done} done): {outcome}",
    )


def _initial_parameters(
    directory: Path, model_cfg: ModelConfig, dataset: TkgDataset
) -> tuple[Any, Any, Growth]:
    """Parameters and statistics of a saved model of this dataset built like ``model_cfg``, and
    how the vocabulary grew since.

    The dataset's vocabulary may extend the artifact's (a live store's later export): the trainer
    then initialises the rows the parameters lack (``vocab_growth.grow``); any other vocabulary,
    or other model settings, is refused.
    """
    try:
        saved = load_artifact(directory)
        growth = check_extends(saved.manifest["data"], dataset.entity_names, dataset.relation_names)
    except (ArtifactError, OSError) as exc:
        raise TrainError(f"--init-from: {exc}") from exc
    except VocabularyGrowthError as exc:
        raise TrainError(
            f"--init-from {directory}: trained on {saved.manifest['data'].get('dataset')!r}, "
            f"whose vocabulary {dataset.name} does not extend: {exc}"
        ) from exc
    sized = {"num_entities": model_cfg.num_entities, "num_relations": model_cfg.num_relations}
    differing = differences(
        {**saved.model_config.to_dict(), **sized}, model_cfg.to_dict(), ("there", "here")
    )
    if differing:
        raise TrainError(f"--init-from {directory}: other model settings ({'; '.join(differing)})")
    if growth.grown:
        log.info("vocabulary_grown", init_from=str(directory), **growth.to_dict())
    return saved.params, saved.batch_stats, growth


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        mem_fraction = _given(args.mem_fraction, config.graph.mem_fraction)
        jax_env.configure(mem_fraction)
    except (ConfigError, RuntimeError, ValueError) as exc:
        print(f"geopol train graph: {exc}", file=sys.stderr)
        return 2
    configure_logging("graph", config.logging.level, config.logging.format)
    try:
        request = request_from(args, config)
        dataset = load_tkg(request.data)
        result = train_graph(request, dataset)
    except (OSError, TkgFormatError, TrainError) as exc:
        print(f"geopol train graph: {exc}", file=sys.stderr)
        return 2
    summary = {
        "best_epoch": result.best_epoch,
        "valid": result.best_valid,
        "epochs": result.epochs,
        "compiles": result.compiles,
        "artifact": str(request.out),
    }
    print(json.dumps(summary, indent=2))
    return 0
