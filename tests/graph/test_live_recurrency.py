"""Live recurrency scores from the store equal the export's, so the calibrator's stack reads in
serving the feature it was fitted on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl

from services.graph.baselines import ALPHAS, Benchmark, RecurrencyParams, RecurrencyScorer
from services.graph.live_recurrency import StoreRecurrency
from shared.event_store import EventStore


def _store(tmp_path: Path, facts: list[tuple[str, str, str, int]]) -> EventStore:
    store = EventStore(tmp_path / "store", step_minutes=1440, min_free_bytes=0)
    s, r, o, t = (list(c) for c in zip(*facts, strict=True))
    n = len(facts)
    frame = pl.DataFrame(
        {
            "event_id": pl.Series(range(n), dtype=pl.Int64),
            "subject": s,
            "relation": r,
            "object": o,
            "t": pl.Series(t, dtype=pl.Int64),
            "goldstein": [0.0] * n,
            "num_mentions": [1] * n,
            "quad_class": pl.Series([1] * n, dtype=pl.Int8),
        }
    )
    store.append(frame, source="hand", source_sha256=hashlib.sha256(b"hand").hexdigest())
    return store


def test_store_recurrency_scores_what_the_export_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = [f"E{i}" for i in range(6)]
    facts = [
        (names[rng.integers(6)], f"R{rng.integers(2)}", names[rng.integers(6)], int(t))
        for t in range(8)
        for _ in range(6)
    ]
    facts = [f for f in facts if f[0] != f[2]]
    store = _store(tmp_path, facts)
    quads = np.concatenate(
        [np.column_stack([store.snapshot(t), np.full(len(store.snapshot(t)), t)]) for t in range(8)]
    )
    num_entities, num_relations = store.num_entities, store.num_relations
    params = RecurrencyParams(
        lambda_index=np.array([3, 6, 1, 10][: 2 * num_relations]),
        alpha_index=np.array([ALPHAS.index(0.99), ALPHAS.index(0.9), 2, 5][: 2 * num_relations]),
    )
    bench = Benchmark("hand", num_entities, num_relations, {"all": quads})
    exported = RecurrencyScorer(bench, params)
    live = StoreRecurrency(store, params, num_entities, num_relations)
    candidates = np.arange(num_entities)
    seen_any = False
    for t in (3, 7):
        for subject, relation in ((0, 0), (1, 1), (2, 0 + num_relations)):
            want = exported.scores(t, np.array([subject]), np.array([relation]), candidates[None])[
                0
            ]
            got = live.scores(t, subject, relation, candidates)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
            assert got.dtype == np.float32
            seen_any |= bool(got.max() > 0)
    assert seen_any  # the comparison is not between two zero vectors
    assert (live.scores(0, 0, 0, candidates) == 0).all()  # nothing before the first step
