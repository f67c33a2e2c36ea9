"""``geopol eval --data DIR``: every ranking method on any benchmark folder, into eval.json.

Runs the frequency and recurrency baselines, then RE-GCN: an artifact already trained on the
same data (its manifest's vocabulary hashes must match) is reused, a run that was cut short
(its checkpoint is unfinished) is resumed with its own settings, otherwise one is trained.
All land in reports/eval.json under the dataset's name, so anyone can run us on data we have
never seen. This module imports no JAX until ``jax_env.configure`` has run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from services.graph import baselines, jax_env
from services.graph.artifact import ArtifactError, read_manifest
from services.graph.train import TrainError, TrainRequest, has_static_graph, train_graph
from services.ingest.tkg_loader import TkgDataset, TkgFormatError, load_tkg
from shared import eval_report
from shared.config import DEFAULT_CONFIG, ConfigError, load_config
from shared.log import configure_logging
from shared.manifest import vocab_sha256


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
    parser.add_argument("--epochs", type=int, default=30, help="max epochs if training")
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience")
    parser.add_argument(
        "--static",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="static entity-word graph (default: on when e-w-graph.txt exists)",
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


def reusable(artifact: Path, dataset: TkgDataset) -> bool:
    """Whether ``artifact`` holds a model trained on exactly this dataset's vocabularies."""
    try:
        data = read_manifest(artifact)["data"]
    except (ArtifactError, KeyError, OSError):
        return False
    return (data.get("entities_sha256"), data.get("relations_sha256")) == (
        vocab_sha256(dataset.entity_names),
        vocab_sha256(dataset.relation_names),
    )


def training_request(args: argparse.Namespace, artifact: Path) -> TrainRequest:
    """Train afresh with the eval flags, or resume an interrupted run with the settings it was
    started with (read from its checkpoint, so a run started with --history 10 resumes as one)."""
    from services.graph import checkpoint  # JAX, after configure

    static = args.static if args.static is not None else has_static_graph(args.data)
    common = {"data": args.data, "out": artifact, "progress": not args.no_progress}
    if not checkpoint.unfinished(artifact):
        return TrainRequest(**common, epochs=args.epochs, patience=args.patience, static=static)
    try:
        saved = checkpoint.read_progress(artifact)
    except checkpoint.CheckpointError as exc:
        raise TrainError(f"{exc}; remove {checkpoint.path_in(artifact)} to train afresh") from exc
    model_cfg, train_cfg = saved["model_config"], saved["train_config"]
    print(f"resuming the interrupted RE-GCN run checkpointed in {artifact}")
    return TrainRequest(
        **common,
        epochs=train_cfg["epochs"],
        patience=train_cfg["patience"],
        history=model_cfg["history"],
        dim=model_cfg["dim"],
        blocks=model_cfg["num_blocks"],
        seed=train_cfg["seed"],
        static=model_cfg["use_static"],
        resume=True,
    )


def evaluate_regcn(args: argparse.Namespace, dataset: TkgDataset, name: str) -> None:
    artifact = args.artifact or load_config(args.config).regcn_root / name
    from services.graph import checkpoint  # JAX, after configure

    if reusable(artifact, dataset) and not checkpoint.unfinished(artifact):
        print(f"reusing RE-GCN artifact {artifact}")
    else:
        train_graph(training_request(args, artifact), dataset)

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
        if not args.baselines_only:
            jax_env.configure(args.mem_fraction)
        configure_logging("graph")
        dataset = load_tkg(args.data)
        name = args.name or dataset.name
        baselines.run(args.data, name, args.reports)
        if not args.baselines_only:
            evaluate_regcn(args, dataset, name)
    except (OSError, TkgFormatError, TrainError, ArtifactError, ConfigError, RuntimeError) as exc:
        print(f"geopol eval: {exc}", file=sys.stderr)
        return 2
    return 0
