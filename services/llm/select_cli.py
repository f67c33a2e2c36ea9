"""``geopol llm select``: the training questions a selection chooses, shown so a person can check.

Runs the very plan ``geopol train llm`` runs (the same export, validation hold-out, selection and
seed; no model is loaded) and prints how many rows were chosen from how large a pool, for
``influence`` how many score bins the sample covers, and ``--show N`` of the chosen questions in
words with their influence score and surrogate loss, highest influence first — an influence
estimate can pick garbage (seed pitfall AT-3), and reading a few is the cheapest check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from services.llm.questions import Vocabulary
from services.llm.selection import SELECTIONS, SelectionError, coverage_bins
from services.llm.train_cli import PlanError, plan, settings_from
from shared.config import DEFAULT_CONFIG, ConfigError, load_config
from shared.embedding_export import ExportError
from shared.influence_scores import InfluenceScoresError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol llm select",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument("--data", type=Path, help="training export (default llm.train.data)")
    parser.add_argument("--selection", choices=sorted(SELECTIONS),
                        help="default llm.train.selection")  # fmt: skip
    parser.add_argument("--questions", type=int, help="default llm.train.questions")
    parser.add_argument("--seed", type=int, help="default llm.train.seed")
    parser.add_argument("--stage2-questions", type=int, help="default llm.train.stage2_questions")
    parser.add_argument("--show", type=int, default=10, help="chosen questions to print")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        for name in ("valid", "recipe", "valid_questions", "batch"):
            setattr(args, name, None)
        settings, recipe, _ = settings_from(args, config)
        data, rows, _, valid_rows, stages, scores = plan(settings, recipe)
    except (ConfigError, ExportError, PlanError, SelectionError, InfluenceScoresError,
            OSError) as exc:  # fmt: skip
        print(f"geopol llm select: {exc}", file=sys.stderr)
        return 2
    pool = len(data) - len(valid_rows)
    print(f"{settings.selection}: {len(rows)} of {pool} training questions (seed {settings.seed}; "
          f"{len(valid_rows)} validation rows held out)")  # fmt: skip
    if len(stages) > 1:
        print("stages: " + ", ".join(f"{s['stage']}: {s['questions']} ({s['selection']})"
                                     for s in stages))  # fmt: skip
    if scores is not None and settings.selection == "influence":
        taken = set(coverage_bins(scores.influence[rows], settings.bins).tolist())
        print(f"influence: {len(taken)} of {settings.bins} equal-width score bins covered after "
              f"dropping the top {settings.hard_prune:.0%}")  # fmt: skip
    vocab = Vocabulary.of_export(data)
    queries = np.asarray(data.arrays["queries"])
    shown = rows if scores is None else rows[np.argsort(-scores.influence[rows], kind="stable")]
    for row in shown[: args.show]:
        s, r, o, t = (int(x) for x in queries[row])
        measured = "" if scores is None else (
            f"influence {scores.influence[row]:+.4g}  loss {scores.loss[row]:.3f}  "
        )  # fmt: skip
        print(f"  row {row:>6}  {measured}{vocab.date(t)}  {vocab.entity(s)} — "
              f"{vocab.relation(r)} — {vocab.entity(o)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
