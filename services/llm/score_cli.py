"""``geopol llm score``: score export rows with an LLM artifact and save the score table.

This is how the calibrate stage gets its fitting data: the LLM's logits of every candidate,
beside the graph's and the recurrency baseline's scores, for questions the LLM never trained
on. ``geopol train llm`` holds out the last ``llm.train.valid_questions`` rows (with the gold) of
its export for validation, so ``--tail`` up to that number scores unseen questions; the live
export of the same split lists the same questions in the same order, so its tail is unseen too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from services.llm import artifact as llm_artifact
from services.llm.backbone import BackboneError
from services.llm.evaluate import BATCH, load_scorer, sample_rows
from services.llm.tables import score_table
from shared import score_table as tables
from shared.config import DEFAULT_CONFIG, ConfigError, load_config
from shared.embedding_export import ExportError, load_export


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
    parser.add_argument("--method", default="llm", help="method name recorded in the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        export = load_export(args.data)
        count = args.tail if args.tail is not None else args.sample
        if count <= 0:
            raise ValueError(f"--tail/--sample {count}: must be positive")
        gold_only = export.manifest["protocol"] != "live"
        if args.tail is not None:
            rows = np.arange(max(0, len(export) - count), len(export))
            if gold_only:
                rows = rows[np.asarray(export.arrays["gold_index"])[rows] >= 0]
        else:
            rows = sample_rows(export, count, args.seed, gold_only=gold_only)
        k = args.k or export.num_candidates
        llm_artifact.check(args.artifact)
        if config.llm.threads:
            torch.set_num_threads(config.llm.threads)
        scorer, checked = load_scorer(config, args.artifact)
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
    print(f"{args.out}: {len(table)} questions, K={k}, LLM top-1 {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
