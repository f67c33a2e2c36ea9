"""``geopol eval --data DIR``: every ranking method on any benchmark folder, into eval.json.

Runs the frequency and recurrency baselines, then RE-GCN: an artifact already trained on the
same data (its manifest's vocabulary hashes must match) is reused, otherwise one is trained.
All land in reports/eval.json under the dataset's name, so anyone can run us on data we have
never seen. This module imports no JAX until ``jax_env.configure`` has run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from services.graph import baselines, eval_report, jax_env
from services.graph.artifact import ArtifactError, read_manifest, vocab_sha256
from services.graph.train import TrainError, TrainRequest, train_graph
from services.ingest.tkg_loader import TkgDataset, TkgFormatError, load_tkg
from shared.log import configure_logging

ARTIFACT_ROOT = Path("var/artifacts/regcn")


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
        help=f"RE-GCN artifact to reuse or train (default {ARTIFACT_ROOT}/NAME)",
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


def evaluate_regcn(args: argparse.Namespace, dataset: TkgDataset, name: str) -> None:
    artifact = args.artifact or ARTIFACT_ROOT / name
    from services.graph import checkpoint  # JAX, after configure

    interrupted = checkpoint.unfinished(artifact)
    if reusable(artifact, dataset) and not interrupted:
        print(f"reusing RE-GCN artifact {artifact}")
    else:
        if interrupted:
            print(f"resuming the interrupted RE-GCN run checkpointed in {artifact}")
        static = args.static if args.static is not None else (args.data / "e-w-graph.txt").is_file()
        train_graph(
            TrainRequest(
                data=args.data,
                out=artifact,
                epochs=args.epochs,
                patience=args.patience,
                static=static,
                progress=not args.no_progress,
                resume=interrupted,
            ),
            dataset,
        )
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
    except (OSError, TkgFormatError, TrainError, ArtifactError, RuntimeError) as exc:
        print(f"geopol eval: {exc}", file=sys.stderr)
        return 2
    return 0
