"""``geopol train llm``: train the LLM stage on an embedding export and save its artifact.

Everything is validated before any weights are loaded: the config, the exports (manifest, every
file's sha256, dtypes and shapes), that training and validation exports come from the same graph
artifact, and that the recipe fits them (history steps, option counts, question counts).
A run cut short (a killed process, an ended session) leaves a checkpoint beside ``--out`` at its
last validation; the same command continues from it, ``--fresh`` starts again.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from services.llm import artifact as llm_artifact
from services.llm import checkpoint as llm_checkpoint
from services.llm import prompt_facts
from services.llm.backbone import (
    BackboneError,
    BackboneSource,
    load_backbone,
    pick_dtype,
    resolve,
)
from services.llm.model import build_scorer, with_lora
from services.llm.questions import Vocabulary
from services.llm.selection import SELECTIONS, SelectionError, select
from services.llm.torch_process import configure_torch
from services.llm.train import TrainingError, train, undersample_relations
from shared.config import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    LlmTrainConfig,
    RecipeSettings,
    load_config,
)
from shared.embedding_export import (
    ExportedSplit,
    ExportError,
    gold_rows,
    held_out_rows,
    load_export,
)
from shared.influence_scores import InfluenceScores, InfluenceScoresError
from shared.log import configure_logging, get_logger
from shared.manifest import vocab_sha256

log = get_logger(__name__)


class PlanError(ValueError):
    """The training asked for does not fit its data; the message names the setting and value."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol train llm",
        description="Train the LLM stage (LoRA + graph adapters + feature token, TGL-LLM hybrid "
        "graph tokens) on multiple-choice questions from an embedding export, and save a checked "
        "artifact. Settings come from the config's llm section; each flag overrides one.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument(
        "--data",
        type=Path,
        help="training export (default llm.train.data, else RUN_DIR/embeddings/DATASET/train)",
    )
    parser.add_argument(
        "--valid",
        type=Path,
        help="validation export (default llm.train.valid; none: the last rows of --data)",
    )
    parser.add_argument("--recipe", help="recipe name in llm.recipes (default llm.train.recipe)")
    parser.add_argument(
        "--questions", type=int, help="training questions (default llm.train.questions)"
    )
    parser.add_argument("--valid-questions", type=int, help="fixed validation sample size")
    parser.add_argument(
        "--stage2-questions", type=int,
        help="a second stage of this many more, disjoint and uniform (default "
        "llm.train.stage2_questions)",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, help="questions per step (default llm.train.batch)")
    parser.add_argument("--seed", type=int, help="seed of selection, order and initialisation")
    parser.add_argument(
        "--out", type=Path, help="artifact folder (default: the config's llm artifact)"
    )
    parser.add_argument(
        "--selection",
        choices=sorted(SELECTIONS),
        help="how training questions are chosen (default llm.train.selection)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard the checkpoint of a cut run (.OUT.checkpoint beside --out) instead of "
        "continuing it; without this flag a rerun of the same command resumes where it stopped",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def settings_from(
    args: argparse.Namespace, config: Config
) -> tuple[LlmTrainConfig, RecipeSettings, str]:
    base = config.llm.train
    overrides = {
        "data": args.data or base.data or config.embeddings_dir / "train",
        "valid": args.valid or base.valid,
        "recipe": args.recipe or base.recipe,
        "questions": args.questions or base.questions,
        "valid_questions": args.valid_questions or base.valid_questions,
        "batch": args.batch or base.batch,
        "seed": base.seed if args.seed is None else args.seed,
        "selection": args.selection or base.selection,
        "stage2_questions": (
            base.stage2_questions if args.stage2_questions is None else args.stage2_questions
        ),
    }
    settings = base.model_copy(update=overrides)
    if settings.recipe not in config.llm.recipes:
        raise PlanError(f"--recipe {settings.recipe!r} is not one of {sorted(config.llm.recipes)}")
    return settings, config.llm.recipes[settings.recipe], settings.recipe


class Plan(NamedTuple):
    """What a run trains on: the export and its rows in training order, the validation export
    and rows, the stages the rows make up, and the influence scores the selection read."""

    data: ExportedSplit
    rows: np.ndarray
    valid: ExportedSplit
    valid_rows: np.ndarray
    stages: list[dict[str, Any]]
    scores: InfluenceScores | None


def plan(settings: LlmTrainConfig, recipe: RecipeSettings) -> Plan:
    """Load and check the exports and choose the rows; no model is touched."""
    data = load_export(Path(settings.data))
    valid = load_export(Path(settings.valid)) if settings.valid else data
    if valid.manifest["graph_artifact"] != data.manifest["graph_artifact"]:
        raise PlanError("--data and --valid come from different graph artifacts")
    for name, export in (("data", data), ("valid", valid)):
        if recipe.steps > export.steps:
            raise PlanError(f"recipe steps {recipe.steps} > T={export.steps} of the {name} export")
        if max(recipe.options + [settings.valid_k]) > export.num_candidates:
            raise PlanError(
                f"recipe options {recipe.options} need more than the {export.num_candidates} candidates of the {name} export"
            )
    usable = gold_rows(data)
    if settings.valid:
        valid_rows = np.random.default_rng(settings.seed).permutation(gold_rows(valid))[
            : settings.valid_questions
        ]
        train_pool_exclude = np.setdiff1d(np.arange(len(data)), usable)
    else:  # hold out the latest rows: validation is later in time than training
        valid_rows = held_out_rows(data, settings.valid_questions)
        train_pool_exclude = np.setdiff1d(np.arange(len(data)), np.setdiff1d(usable, valid_rows))
    available = len(data) - len(train_pool_exclude)
    if settings.questions > available:
        raise PlanError(
            f"--questions {settings.questions}: the export offers {available} training questions"
        )
    if settings.stage2_questions and settings.undersample_relations is not None:
        raise PlanError("undersample_relations reorders the rows: it cannot keep two stages apart")
    rows, scores, stages = select(settings, data, train_pool_exclude)
    if settings.undersample_relations is not None:
        rows = undersample_relations(data, rows, settings.undersample_relations, settings.seed)
    return Plan(data, rows, valid, valid_rows, stages, scores)


def lineage(data: ExportedSplit, rows: np.ndarray, recipe: RecipeSettings) -> dict[str, Any]:
    m = data.manifest
    return {
        "graph": {
            "artifact": m["graph_artifact"],
            "dim": m["dim"],
            "steps": recipe.steps,
            "export_steps": m["steps"],
        },
        "data": {
            "dataset": m["dataset"],
            "split": m["split"],
            "protocol": m["protocol"],
            "cutoff_step": int(np.asarray(data.arrays["queries"])[rows, 3].max()),
            "questions": int(len(rows)),
            # the very rows trained on, so `geopol llm score --unseen` can leave them all out
            "rows": [int(r) for r in np.sort(rows)],
            "vocab": _vocab_hashes(m),
        },
        "options": sorted(recipe.options),
    }


def _vocab_hashes(manifest: dict[str, Any]) -> dict[str, str]:
    return {
        "entity_names_sha256": vocab_sha256(list(manifest["entity_names"])),
        "relation_names_sha256": vocab_sha256(list(manifest["relation_names"])),
    }


def run_identity(
    config: Config,
    settings: LlmTrainConfig,
    recipe: RecipeSettings,
    source: BackboneSource,
    exports: tuple[ExportedSplit, np.ndarray, ExportedSplit, np.ndarray],
) -> dict[str, Any]:
    """What a checkpoint must match to continue this run: the same backbone, exports, rows in
    the same order, recipe and settings (JSON, as progress.json records it)."""
    data, rows, valid, valid_rows = exports
    return {
        "backbone": {"name": source.name, "weights_sha256": source.weights_sha256},
        "llm": config.llm.model_dump(mode="json", include={"dtype", "load_in_4bit", "lora"}),
        "data": {k: data.manifest[k] for k in ("graph_artifact", "dataset", "split", "protocol")},
        "valid": {k: valid.manifest[k] for k in ("dataset", "split", "protocol")},
        "rows_sha256": llm_checkpoint.rows_sha256(rows),
        "valid_rows_sha256": llm_checkpoint.rows_sha256(valid_rows),
        "recipe": recipe.model_dump(mode="json"),
        "settings": settings.model_dump(mode="json"),
    }


def run(
    config: Config,
    settings: LlmTrainConfig,
    recipe: RecipeSettings,
    recipe_name: str,
    out: Path,
    progress: bool,
    fresh: bool = False,
) -> dict[str, Any]:
    data, rows, valid, valid_rows, stages, _ = plan(settings, recipe)
    facts = prompt_facts.source_for(config, recipe.facts)  # a missing store fails before weights
    configure_torch(config.llm)
    source = resolve(config.llm.backbone, config.backbone_cache)
    identity = run_identity(config, settings, recipe, source, (data, rows, valid, valid_rows))
    checkpoint = llm_checkpoint.Checkpoint.beside(out, identity)
    if fresh:
        llm_checkpoint.discard(checkpoint)
    resume = llm_checkpoint.load(checkpoint)  # another run's is refused before the backbone loads
    backbone = load_backbone(
        source,
        pick_dtype(config.llm.dtype),
        load_in_4bit=config.llm.load_in_4bit,
        gradient_checkpointing=config.llm.gradient_checkpointing,
    )
    with_lora(backbone, config.llm.lora, settings.seed)
    scorer = build_scorer(recipe, backbone, data.dim, settings.seed)
    result = train(
        scorer,
        recipe,
        settings,
        data,
        rows,
        valid,
        valid_rows,
        progress=progress,
        checkpoint=checkpoint,
        resume=resume,
        facts=facts,
    )
    info = lineage(data, rows, recipe)
    info["data"] |= {"selection": settings.selection, "stages": stages}
    info["recipe_name"] = recipe_name
    info["train"] = {**asdict(result), "settings": settings.model_dump(mode="json")}
    saved = llm_artifact.save(
        out, scorer, recipe, config.llm.lora, Vocabulary.of_export(data), info
    )
    llm_checkpoint.discard(checkpoint)  # the artifact holds the run now
    return {
        "out": str(out),
        "artifact": saved.artifact_id,
        **{
            k: info["train"][k]
            for k in (
                "best_acc",
                "best_questions",
                "questions_seen",
                "resumed_from",
                "samples_per_s",
                "trainable",
                "curve",
            )
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        configure_logging("llm", config.logging.level, config.logging.format)
        settings, recipe, name = settings_from(args, config)
        summary = run(
            config,
            settings,
            recipe,
            name,
            args.out or config.llm_artifact,
            not args.no_progress,
            args.fresh,
        )
    except (
        ConfigError,
        ExportError,
        PlanError,
        BackboneError,
        TrainingError,
        llm_artifact.LlmArtifactError,
        llm_checkpoint.LlmCheckpointError,
        SelectionError,
        InfluenceScoresError,
        prompt_facts.FactsError,
        OSError,
    ) as exc:
        print(f"geopol train llm: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
