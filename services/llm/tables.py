"""Score a sample of export rows with an LLM artifact into a score table (shared.score_table).

The table keeps every candidate's LLM logit beside the graph's and the recurrency baseline's
scores, in the export's candidate order, so the calibrate stage can fit on it exactly what the
service will send it. Options are shown to the model in the same seeded order as everywhere
else (``option_positions``); the logits are put back in candidate order afterwards. The meta
names the export the rows are of (``export``: its folder, ``export_id``: the sha256 of its
manifest), so a reader can find each row's query again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm import tqdm

from services.llm.prompt_facts import FactSource
from services.llm.questions import Vocabulary, export_batch, option_positions
from services.llm.scoring import OptionScorer
from shared.embedding_export import ExportedSplit
from shared.score_table import ScoreTable


def score_table(
    scorer: OptionScorer,
    export: ExportedSplit,
    rows: np.ndarray,
    k: int,
    steps: int,
    seed: int,
    batch: int,
    label: str | None = None,
    meta: dict[str, Any] | None = None,
    facts: FactSource | None = None,
) -> ScoreTable:
    """Every candidate's scores for ``rows`` at ``k`` options (a progress bar when ``label``;
    ``facts`` where the scorer's prompts show them)."""
    vocab = Vocabulary.of_export(export, facts)
    scorer.eval()
    scorer.refresh_prefix_cache()
    rows = np.asarray(rows, dtype=np.int64)
    letters = []
    for start in tqdm(
        range(0, len(rows), batch),
        desc=f"{label} K={k}",
        unit="batch",
        leave=False,
        disable=label is None,
    ):
        letters.append(
            scorer.score(export_batch(export, vocab, rows[start : start + batch], k, steps, seed))
        )
    a = export.arrays
    gold_index = np.asarray(a["gold_index"])[rows]
    order = (
        np.stack(
            [
                option_positions(int(g), export.num_candidates, k, seed, int(r))[0]
                for g, r in zip(gold_index, rows, strict=True)
            ]
        )
        if len(rows)
        else np.zeros((0, k), np.int64)
    )
    by_position = np.argsort(order, axis=1)
    positions = np.take_along_axis(order, by_position, axis=1)
    llm = np.take_along_axis(
        np.concatenate(letters) if letters else np.zeros((0, k)), by_position, axis=1
    )
    take = rows[:, None]
    hit = positions == gold_index[:, None]
    return ScoreTable(
        llm=llm.astype(np.float32),
        graph=np.asarray(a["scores"][take, positions], np.float32),
        recurrency=np.asarray(a["recurrency"][take, positions], np.float32),
        candidate_ids=np.asarray(a["candidate_ids"][take, positions], np.int64),
        rows=rows,
        gold=np.where(hit.any(axis=1), hit.argmax(axis=1), -1).astype(np.int64),
        meta={
            "dataset": export.manifest["dataset"],
            "split": export.manifest["split"],
            "protocol": export.manifest["protocol"],
            "graph_artifact": export.manifest["graph_artifact"],
            "export": str(export.directory) if export.directory is not None else None,
            "export_id": export.export_id,
            "K": k,
            "seed": seed,
            **(meta or {}),
        },
    )
