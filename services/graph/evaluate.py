"""``geopol eval --data DIR``: every ranking method on any benchmark folder, into eval.json.

Runs the frequency and recurrency baselines, then RE-GCN. An artifact is reused only when it was
trained on exactly this data: the sha256 of every split file (with its id files) recorded in its
manifest must be the folder's, so a folder rebuilt with other splits (``geopol dataset
gdelt-georgia --test-frac 0.3``) can never be scored by a model trained on its test days. An
artifact without those hashes is not reused either, and neither is one whose epochs, patience or
static graph differ from a flag given here: the flags are never silently dropped. A run of this
data that was cut short (its checkpoint is unfinished) is resumed with its own settings, the
given --epochs/--patience replacing its own; otherwise one is trained afresh, saying why.
All land in reports/eval.json under the dataset's name, so anyone can run us on data we have
never seen. This module imports no JAX until ``jax_env.configure`` has run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from services.graph import baselines, jax_env
from services.graph.artifact import MANIFEST, ArtifactError, read_manifest
from services.graph.train import (
    TrainError,
    TrainRequest,
    has_static_graph,
    read_checkpoint,
    settings_of,
    train_graph,
)
from shared import eval_report
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.log import configure_logging
from shared.tkg_dataset import TkgDataset, TkgFormatError, load_tkg

DEFAULT_EPOCHS = 30
DEFAULT_PATIENCE = 5
"""Training settings of a fresh run when no flag gives them."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol eval",
        description="Evaluate frequency, recurrency and RE-GCN under the ranking protocol (all "
        "entities, object + inverse queries, single-step; raw and time-aware filtered) on a "
        "folder in RE-Net layout (train/valid/test.txt, entity2id/relation2id). Results go to "
        "REPORTS/eval.json and eval.md.",
    )
    parser.add_argument("--data", type=Path, required=True, help="benchmark folder")
    parser.add_argument("--name", help="dataset name in the report (default: folder name)")
    parser.add_argument(
        "--artifact",
        type=Path,
        help="RE-GCN artifact to reuse or train (default RUN_DIR/artifacts/regcn/NAME)",
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="config giving RUN_DIR (paths.run_dir)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"max epochs if training (default {DEFAULT_EPOCHS}); an artifact trained with "
        "other epochs is retrained",
    )
    parser.add_argument(
        "--patience",
        type=int,
        help=f"early-stopping patience (default {DEFAULT_PATIENCE}); an artifact trained with "
        "another is retrained",
    )
    parser.add_argument(
        "--static",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="static entity-word graph (default: on when e-w-graph.txt exists); an artifact "
        "trained otherwise is retrained",
    )
    parser.add_argument("--baselines-only", action="store_true", help="skip RE-GCN")
    parser.add_argument(
        "--mem-fraction",
        type=float,
        default=0.5,
        help="accelerator memory share for JAX (default 0.5)",
    )
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="reports folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _requested(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings given as flags, keyed as in the manifests' configs."""
    given = {"epochs": args.epochs, "patience": args.patience, "use_static": args.static}
    return {key: value for key, value in given.items() if value is not None}


def _other_data(recorded: dict[str, str], dataset: TkgDataset) -> list[str]:
    """The splits whose sha256 (file with its id files) differs from the recorded one."""
    found = dataset.source_sha256
    return sorted(k for k in set(recorded) | set(found) if recorded.get(k) != found.get(k))


def reuse_refusal(args: argparse.Namespace, artifact: Path, dataset: TkgDataset) -> str | None:
    """Why the artifact in ``artifact`` cannot be reused for this evaluation; None when it can."""
    from services.graph import checkpoint  # JAX, after configure

    if not (artifact / MANIFEST).is_file():
        return "there is none yet"
    try:
        manifest = read_manifest(artifact)
    except ArtifactError as exc:
        return str(exc)
    recorded = manifest["data"].get("source_sha256")
    if not isinstance(recorded, dict) or not recorded:
        return "its manifest records no sha256 of the data it was trained on"
    differing = _other_data(recorded, dataset)
    if differing:
        return (
            f"it was trained on other data (sha256 of {', '.join(differing)} differs from "
            f"{dataset.directory}'s)"
        )
    saved = {**manifest["train_config"], "use_static": manifest["config"].get("use_static")}
    for key, wanted in _requested(args).items():
        if saved.get(key) != wanted:
            return f"it was trained with {key} {saved.get(key)!r}, this evaluation asks {wanted!r}"
    if checkpoint.unfinished(artifact):
        return "its training run was cut short"
    return None


def training_request(args: argparse.Namespace, artifact: Path, dataset: TkgDataset) -> TrainRequest:
    """Resume an interrupted run of this data with the settings it was started with (read from
    its checkpoint, so a run started with --history 10 resumes as one; given --epochs and
    --patience replace its own), or train afresh with the eval flags."""
    from services.graph import checkpoint  # JAX, after configure

    requested = _requested(args)
    common = {
        "data": args.data,
        "out": artifact,
        "progress": not args.no_progress and sys.stderr.isatty(),
    }
    progress = read_checkpoint(artifact) if checkpoint.unfinished(artifact) else None
    if progress is not None:
        saved = settings_of(progress)
        differing = _other_data(progress["data"].get("source_sha256") or {}, dataset)
        if differing:
            print(f"not resuming the run in {artifact}: its {', '.join(differing)} data differ")
        elif requested.get("use_static", saved["static"]) != saved["static"]:
            print(
                f"not resuming the run in {artifact}: it was started with static {saved['static']}"
            )
        else:
            print(f"resuming the interrupted RE-GCN run checkpointed in {artifact}")
            changes = {k: requested[k] for k in ("epochs", "patience") if k in requested}
            return TrainRequest(**common, **{**saved, **changes}, resume=True)
    static = requested.get("use_static", has_static_graph(args.data))
    return TrainRequest(
        **common,
        epochs=requested.get("epochs", DEFAULT_EPOCHS),
        patience=requested.get("patience", DEFAULT_PATIENCE),
        static=static,
    )


def evaluate_regcn(
    args: argparse.Namespace, config: Config, dataset: TkgDataset, name: str
) -> None:
    """Reuse, resume or train the RE-GCN artifact, then write its test metrics to the report."""
    artifact = args.artifact or config.regcn_root / name
    refusal = reuse_refusal(args, artifact, dataset)
    if refusal is None:
        print(f"reusing RE-GCN artifact {artifact}")
    else:
        print(f"training RE-GCN into {artifact}: not reusing it, {refusal}")
        train_graph(training_request(args, artifact, dataset), dataset)

    from services.graph.trainer import evaluate_artifact  # JAX, after configure

    metrics = evaluate_artifact(artifact, dataset, "test")
    command = shlex.join(["geopol", "eval", "--data", str(args.data), "--artifact", str(artifact)])
    for filter_name, key in (("time-aware", "filtered"), ("raw", "raw")):
        eval_report.write_ranking(
            name,
            eval_report.method_key("regcn", filter_name),
            {**metrics[key], "filter": filter_name},
            args.reports / "eval.json",
            command=command,
            notes=f"artifact {artifact}",
        )
    print(
        f"regcn time-aware filtered MRR {metrics['filtered']['mrr']:.4f} "
        f"(raw {metrics['raw']['mrr']:.4f})"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if not args.baselines_only:
            jax_env.configure(args.mem_fraction)
        configure_logging("graph", config.logging.level, config.logging.format)
        dataset = load_tkg(args.data)
        name = args.name or dataset.name
        baselines.run(args.data, name, args.reports)
        if not args.baselines_only:
            evaluate_regcn(args, config, dataset, name)
    except (OSError, TkgFormatError, TrainError, ArtifactError, ConfigError, RuntimeError) as exc:
        print(f"geopol eval: {exc}", file=sys.stderr)
        return 2
    return 0
