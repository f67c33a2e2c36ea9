"""Which export rows the LLM trains on: one plugin per name (``llm.train.selection``).

- ``random``: uniform without replacement, seeded.
- ``influence`` (TGL-LLM §4.3, as the authors' code does it): the rows' influence scores
  (shared/influence_scores.py, from ``geopol export influence``), the top ``hard_prune`` share
  dropped (the highest scores are often outliers: seed pitfall AT-3), the rest cut into ``bins``
  equal-width score bins, and the budget spread over them **smallest bin first** (coverage-centric
  sampling: a bin with fewer rows than its share gives all of them, the leftover going to the
  larger bins), seeded within each bin. Every non-empty bin gets at least one row when the budget
  allows.
- ``loss-band``: rows whose surrogate loss lies between its 25th and 75th percentile (neither the
  trivial nor the hopeless ones), drawn uniformly — the control the seed review asks for.

Every selection takes the rows in ``exclude`` never (validation rows, rows without a gold) and
returns exactly ``count`` distinct rows, or raises :class:`SelectionError` saying how many the
pool offers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from shared import influence_scores
from shared.config import LlmTrainConfig
from shared.embedding_export import ExportedSplit
from shared.influence_scores import InfluenceScores

HARD_PRUNE = 0.3
BINS = 25
LOSS_BAND = (25.0, 75.0)


class SelectionError(ValueError):
    """The selection cannot give what was asked; the message says what the pool offers."""


@dataclass(frozen=True)
class Pool:
    """What a selection chooses from: the export, the rows it may take, and the scores."""

    export: ExportedSplit
    rows: np.ndarray
    scores: InfluenceScores | None = None

    def need_scores(self, name: str) -> InfluenceScores:
        if self.scores is None:
            raise SelectionError(
                f"selection {name!r} reads influence scores: run `geopol export influence "
                "--export ...` and give them (llm.train.influence)"
            )
        return self.scores


def pool_of(
    export: ExportedSplit, exclude: np.ndarray, scores: InfluenceScores | None = None
) -> Pool:
    return Pool(export, np.setdiff1d(np.arange(len(export)), exclude), scores)


def _enough(rows: np.ndarray, count: int, what: str) -> None:
    if count > len(rows):
        raise SelectionError(f"{count} training questions asked, {what} offers {len(rows)}")


def random_selection(pool: Pool, count: int, seed: int) -> np.ndarray:
    """``count`` rows drawn uniformly without replacement."""
    _enough(pool.rows, count, "the export")
    return np.random.default_rng(seed).choice(pool.rows, size=count, replace=False)


def coverage_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """The equal-width bin (0..bins-1) of every value over its own range."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(len(values), dtype=np.int64)
    edges = np.linspace(low, high, bins + 1)
    return np.clip(np.digitize(values, edges[1:-1]), 0, bins - 1)


def influence_selection(
    pool: Pool, count: int, seed: int, hard_prune: float = HARD_PRUNE, bins: int = BINS
) -> np.ndarray:
    """Coverage-centric stratified sample of the pool by influence (module docstring)."""
    influence = pool.need_scores("influence").influence
    order = np.argsort(-influence[pool.rows], kind="stable")
    kept = pool.rows[order[int(round(hard_prune * len(order))) :]]
    _enough(kept, count, f"the pool after dropping the top {hard_prune:.0%}")
    which = coverage_bins(influence[kept], bins)
    members = [kept[which == b] for b in range(bins) if np.any(which == b)]
    rng = np.random.default_rng(seed)
    chosen, budget = [], count
    for left, rows in enumerate(sorted(members, key=len)):
        share = min(len(rows), budget // (len(members) - left) or 1, budget)
        chosen.append(rng.choice(rows, size=share, replace=False))
        budget -= share
    taken = np.concatenate(chosen)
    if budget:  # a floor left some budget over: the rest from what no bin gave yet
        rest = np.setdiff1d(kept, taken)
        taken = np.concatenate([taken, rng.choice(rest, size=budget, replace=False)])
    return rng.permutation(taken)  # trained in this order: no curriculum by bin


def loss_band_selection(pool: Pool, count: int, seed: int) -> np.ndarray:
    """``count`` rows drawn uniformly among those whose surrogate loss is mid-band."""
    loss = pool.need_scores("loss-band").loss[pool.rows]
    low, high = np.percentile(loss, LOSS_BAND)
    band = pool.rows[(loss >= low) & (loss <= high)]
    _enough(band, count, f"the loss band [{low:.3f}, {high:.3f}]")
    return np.random.default_rng(seed).choice(band, size=count, replace=False)


#: Selections by name: ``(pool, count, seed) -> rows``.
SELECTIONS: dict[str, Callable[[Pool, int, int], np.ndarray]] = {
    "random": random_selection,
    "influence": influence_selection,
    "loss-band": loss_band_selection,
}


def scores_path(settings: LlmTrainConfig, export: ExportedSplit) -> Path:
    """Where the export's influence scores are: ``llm.train.influence``, else beside it."""
    if settings.influence is not None:
        return Path(settings.influence)
    directory = Path(export.directory if export.directory is not None else settings.data)
    return directory.with_name(directory.name + "-influence")


def select(
    settings: LlmTrainConfig, export: ExportedSplit, exclude: np.ndarray
) -> tuple[np.ndarray, InfluenceScores | None, list[dict[str, Any]]]:
    """The rows to train on, in order, the scores the selection read (None for ``random``;
    checked to be of this very export) and the stages they make up.

    Stage 1 is ``settings.questions`` rows chosen by ``settings.selection``; with
    ``stage2_questions`` a second stage follows in the same run (the model and optimiser carry
    on): a diversity subset drawn uniformly from the pool, disjoint from stage 1 (TGL-LLM §4.3;
    the authors' code may draw stage-1 rows again, which we do not)."""
    scores = None
    if settings.selection != "random":
        scores = influence_scores.load(scores_path(settings, export), export)
    chosen = SELECTIONS[settings.selection]
    if settings.selection == "influence":
        chosen = partial(influence_selection, hard_prune=settings.hard_prune, bins=settings.bins)
    pool = pool_of(export, exclude, scores)
    first = chosen(pool, settings.questions, settings.seed)
    stages = [{"stage": 1, "selection": settings.selection, "questions": len(first)}]
    if not settings.stage2_questions:
        return first, scores, stages
    rest = Pool(export, np.setdiff1d(pool.rows, first))
    try:
        second = random_selection(rest, settings.stage2_questions, settings.seed + 1)
    except SelectionError as exc:
        raise SelectionError(f"stage 2: {exc} (after stage 1 took {len(first)})") from None
    stages.append({"stage": 2, "selection": "random, disjoint", "questions": len(second)})
    return np.concatenate([first, second]), scores, stages
