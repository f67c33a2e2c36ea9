"""``geopol export influence``: score every question of an embedding export by its influence on
the surrogate's validation loss (the first half of TGL-LLM's data selection, paper §4.3).

The surrogate is the export's own graph model with all but its decoder's final layer fixed
(services/graph/influence_surrogate.py). Validation is what the LLM validates on when trained on
this export alone: its latest ``--valid-questions`` answerable rows (``llm.train.valid_questions``
by default), so the chosen questions are those that help the questions the LLM is judged by. The
authors' code takes the gradient of a training batch instead; we follow the paper. Every row gets
a score (validation rows too; the selections leave those out) and the surrogate's loss, which the
``loss-band`` selection reads. Writes ``--out`` (default ``<export>-influence``) in the layout of
shared/influence_scores.py; LiSSA's knobs are ``graph.influence`` of the config.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from services.graph import jax_env
from services.graph.artifact import ArtifactError, GraphArtifact, load
from shared import influence_scores
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.embedding_export import (
    ExportedSplit,
    ExportError,
    gold_rows,
    held_out_rows,
    load_export,
)
from shared.log import configure_logging, get_logger
from shared.manifest import manifest_id
from shared.tkg_dataset import TkgDataset, TkgFormatError, load_tkg

log = get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol export influence",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument("--export", type=Path, required=True, help="embedding export to score")
    parser.add_argument("--data", type=Path, required=True, help="its benchmark folder (RE-Net)")
    parser.add_argument(
        "--artifact", type=Path, help="graph artifact (default: the one the export names, "
        "looked up as the config's graph artifact)",
    )  # fmt: skip
    parser.add_argument(
        "--valid-questions", type=int, help="latest answerable rows that are the validation set "
        "(default llm.train.valid_questions)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="folder to write (default <export>-influence)")
    parser.add_argument("--mem-fraction", type=float, default=0.5, help="accelerator share")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        configure_logging("graph", config.logging.level, config.logging.format)
        export = load_export(args.export)
        dataset = load_tkg(args.data)
        artifact_dir = args.artifact or config.graph_artifact
        artifact = load(
            artifact_dir, num_entities=dataset.num_entities, num_relations=dataset.num_relations
        )
        if manifest_id(artifact.manifest) != export.manifest["graph_artifact"]:
            raise ArtifactError(
                f"{artifact_dir} is graph artifact {manifest_id(artifact.manifest)[:12]}, the "
                f"export was made by {export.manifest['graph_artifact'][:12]} (give --artifact)"
            )
        answerable = len(gold_rows(export))
        count = args.valid_questions or config.llm.train.valid_questions
        if not 0 < count < answerable:
            raise ExportError(
                f"--valid-questions {count}: the export has {answerable} answerable rows"
            )
        valid_rows = held_out_rows(export, count)  # what the LLM validates on
        jax_env.configure(args.mem_fraction)
        scores, loss, seconds = _score(artifact, dataset, export, valid_rows, config)
        out = args.out or args.export.with_name(args.export.name + "-influence")
        settings = config.graph.influence.model_dump()
        influence_scores.save(out, scores, loss, {
            **influence_scores.of_export(export),
            "graph_artifact": export.manifest["graph_artifact"],
            "layer": "entity_decoder.fc",
            "lissa": settings,
            "valid_rows": [int(r) for r in valid_rows],
            "seconds": round(seconds, 1),
        })  # fmt: skip
    except (ConfigError, ExportError, ArtifactError, TkgFormatError, OSError, ValueError) as exc:
        print(f"geopol export influence: {exc}", file=sys.stderr)
        return 2
    order = np.argsort(-scores)
    print(json.dumps({
        "out": str(out), "rows": len(scores), "valid_rows": len(valid_rows),
        "seconds": round(seconds, 1), "influence_top": [int(r) for r in order[:5]],
        "influence_range": [float(scores.min()), float(scores.max())],
    }, indent=2))  # fmt: skip
    return 0


def _score(
    artifact: GraphArtifact,
    dataset: TkgDataset,
    export: ExportedSplit,
    valid_rows: np.ndarray,
    config: Config,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Influence and loss of every row (JAX is imported here, after jax_env.configure)."""
    from services.graph.embeddings import GraphModel
    from services.graph.influence import influence_scores as scores_of
    from services.graph.influence import per_sample_losses, take
    from services.graph.influence_surrogate import decoder_samples, surrogate

    started = time.perf_counter()
    graph_model = GraphModel.from_artifact(artifact)
    samples, tables = decoder_samples(graph_model, dataset, export, config.graph.min_bucket)
    fitted = surrogate(graph_model, samples, tables)
    train_rows = np.setdiff1d(np.arange(len(export)), valid_rows)
    settings = config.graph.influence
    found = scores_of(
        fitted.loss, fitted.params, take(fitted.samples, train_rows),
        take(fitted.samples, valid_rows), settings,
    )  # fmt: skip
    scores = np.zeros(len(export), dtype=np.float32)
    scores[train_rows] = found
    losses = per_sample_losses(fitted.loss, fitted.params, fitted.samples, settings.chunk)
    log.info("influence_scored", rows=len(export), seconds=round(time.perf_counter() - started, 1))
    return scores, losses, time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
