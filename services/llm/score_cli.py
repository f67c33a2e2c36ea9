"""``geopol llm score``: score export rows with an LLM artifact and save the score table.

This is how the calibrate stage gets its fitting data: the LLM's logits of every candidate,
beside the graph's and the recurrency baseline's scores, for questions the LLM never trained
on. ``geopol train llm`` holds out the last ``llm.train.valid_questions`` rows (with the gold) of
its export for validation, so ``--tail`` up to that number scores unseen questions; the live
export of the same split lists the same questions in the same order, so its tail is unseen too.
``--exclude TABLE`` leaves out the rows of an earlier table of the same export (say, the ones a
calibrator was fitted on), so a second sample is disjoint from it. ``--unseen`` leaves out every
row the artifact trained on (its manifest lists them), so ``--sample`` can draw calibration
questions from the whole split, many more days than the held-out tail.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from services.llm import artifact as llm_artifact
from services.llm import prompt_facts
from services.llm.backbone import BackboneError
from services.llm.evaluate import BATCH, load_checked
from services.llm.tables import score_table
from services.llm.torch_process import configure_torch
from shared import score_table as tables
from shared.config import DEFAULT_CONFIG, ConfigError, load_config
from shared.embedding_export import ExportedSplit, ExportError, gold_rows, load_export


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol llm score",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument("--artifact", type=Path, required=True, help="LLM artifact folder")
    parser.add_argument("--data", type=Path, required=True, help="embedding export folder")
    parser.add_argument("--out", type=Path, required=True, help="score table to write")
    parser.add_argument("--k", type=int, help="options per question (default: the export's K)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--tail", type=int, help="the last N rows of the export")
    which.add_argument("--sample", type=int, help="a seeded sample of N rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and option orders")
    parser.add_argument(
        "--exclude",
        type=Path,
        action="append",
        default=[],
        metavar="TABLE",
        help="leave out the rows of this score table of the same export (repeatable)",
    )
    parser.add_argument(
        "--unseen",
        action="store_true",
        help="leave out every row the artifact trained on (the export must be of its split)",
    )
    parser.add_argument("--method", default="llm", help="method name recorded in the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def rows_to_score(
    export: ExportedSplit,
    *,
    tail: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    exclude: tuple[tables.ScoreTable, ...] = (),
    trained: np.ndarray | None = None,
) -> np.ndarray:
    """The export rows to score, in order: the last ``tail`` rows, or a seeded sample of
    ``sample`` rows (``geopol eval llm``'s sample when nothing is excluded), both without the
    rows of the ``exclude`` tables and the ``trained`` rows and, outside the live protocol, only
    rows with the gold among the candidates."""
    count = tail if tail is not None else sample
    if count is None or count <= 0:
        raise ValueError(f"--tail/--sample {count}: must be positive")
    left_out = np.concatenate(
        [np.asarray(t.rows, np.int64) for t in exclude]
        + [np.zeros(0, np.int64) if trained is None else np.asarray(trained, np.int64)]
    )
    if tail is not None:
        pool = np.arange(max(0, len(export) - count), len(export))
    else:
        pool = np.arange(len(export))
    if export.manifest["protocol"] != "live":
        pool = np.intersect1d(pool, gold_rows(export))
    pool = pool[~np.isin(pool, left_out)]
    if tail is not None:
        return pool
    return np.sort(np.random.default_rng(seed).permutation(pool)[:count])


def trained_rows(manifest: dict, export: ExportedSplit) -> np.ndarray:
    """The export rows an LLM artifact trained on, from its manifest; refused unless the export
    is of the split it trained on (the live export of a split lists the same questions in the
    same order as its tgl-mcq export; the graph artifact is checked by ``check_fits``)."""
    data = manifest.get("data", {})
    if "rows" not in data:
        raise ValueError(
            "--unseen: the artifact's manifest lists no training rows (trained before they were recorded); retrain it or use --tail"
        )
    if data["split"] != export.manifest["split"]:
        raise ValueError(
            f"--unseen: the artifact trained on split {data['split']!r}, "
            f"the export is of {export.manifest['split']!r}"
        )
    return np.asarray(data["rows"], np.int64)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        export = load_export(args.data)
        excluded = []
        for path in args.exclude:
            table = tables.load(path)
            tables.check_of_export(table, export, f"--exclude {path}")
            excluded.append(table)
        checked = llm_artifact.check(args.artifact)
        rows = rows_to_score(
            export,
            tail=args.tail,
            sample=args.sample,
            seed=args.seed,
            exclude=tuple(excluded),
            trained=trained_rows(checked.manifest, export) if args.unseen else None,
        )
        k = args.k or export.num_candidates
        configure_torch(config.llm)
        scorer = load_checked(
            config, checked, graph_dim=export.dim, graph_artifact=export.manifest["graph_artifact"]
        )
        table = score_table(
            scorer,
            export,
            rows,
            k,
            checked.steps,
            args.seed,
            BATCH,
            label=None if args.no_progress else args.method,
            meta={"method": args.method, "llm_artifact": checked.artifact_id},
            facts=prompt_facts.source_for(config, scorer.style.facts),
        )
        tables.save(table, args.out)
    except (
        ConfigError,
        ExportError,
        llm_artifact.LlmArtifactError,
        BackboneError,
        tables.ScoreTableError,
        ValueError,
        OSError,
    ) as exc:
        print(f"geopol llm score: {exc}", file=sys.stderr)
        return 2
    acc = float((table.llm.argmax(1) == table.gold).mean()) if len(table) else 0.0
    left_out = f", {len(args.exclude)} table(s) left out" if args.exclude else ""
    left_out += ", trained rows left out" if args.unseen else ""
    print(f"{args.out}: {len(table)} questions{left_out}, K={k}, LLM top-1 {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
