"""Synthetic score tables whose true probabilities are known, for the calibration tests."""

from __future__ import annotations

import numpy as np

from shared.prob_metrics import softmax
from shared.score_table import ScoreTable


def table_with_temperature(
    n: int, k: int, temperature: float, seed: int = 0, protocol: str = "tgl-mcq"
) -> tuple[ScoreTable, np.ndarray]:
    """LLM logits whose truth is drawn from softmax(logits / temperature): a calibrator that
    finds ``temperature`` is exactly calibrated. Returns the table and the true probabilities."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, k))
    true = softmax(logits / temperature)
    gold = np.array([rng.choice(k, p=row) for row in true])
    graph = logits / temperature + rng.normal(0.0, 0.5, size=(n, k))
    table = ScoreTable(
        llm=logits.astype(np.float32),
        graph=graph.astype(np.float32),
        recurrency=rng.random((n, k)).astype(np.float32),
        candidate_ids=np.tile(np.arange(k), (n, 1)),
        rows=np.arange(n),
        gold=gold,
        meta={"protocol": protocol, "dataset": "SYNTH", "split": "valid", "method": "synthetic"},
    )
    return table, true


def with_misses(table: ScoreTable, miss_rate_of: np.ndarray, seed: int = 1) -> ScoreTable:
    """The same questions, each gold removed (a retrieval miss) with its own known probability."""
    rng = np.random.default_rng(seed)
    missed = rng.random(len(table)) < miss_rate_of
    return ScoreTable(
        llm=table.llm,
        graph=table.graph,
        recurrency=table.recurrency,
        candidate_ids=table.candidate_ids,
        rows=table.rows,
        gold=np.where(missed, -1, table.gold),
        meta={**table.meta, "protocol": "live"},
    )
