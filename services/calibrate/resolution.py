"""Resolution: score the forecasts of a step against what happened, and roll a scorecard.

A forecast asks "(subject, relation, ?) at step t". When step t's events are in the store and a
later step has data (the step is final, the same rule ingest closes steps by), its true objects
are every ``o`` with ``(subject, relation, o)`` at t. The forecast's truth is then the most
probable true candidate (several true objects are all right answers; only one is needed), or
``other`` when none of them was a candidate. A query with no such event at all is *void*: the
question did not come up, so it is counted but not scored.

On the simulator the world's exact next-step distribution is known (shared.sim_truth): each
forecast is also compared with it — mean absolute error over the K candidates and ``other``, and
KL(truth || forecast) — which tells calibration error apart from plain bad luck.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared import prob_metrics


@dataclass(frozen=True)
class Resolved:
    """One forecast scored: its probabilities (candidates by probability, then ``other``) and
    the index of its truth among them."""

    id: str
    probabilities: np.ndarray
    truth: int
    hit: bool
    in_candidates: bool
    brier: float
    log_score: float


def true_objects(triples: np.ndarray) -> dict[tuple[int, int], set[int]]:
    """``(subject, relation) -> {object}`` of a step's ``[n, 3]`` facts."""
    truths: dict[tuple[int, int], set[int]] = {}
    for s, r, o in np.asarray(triples, dtype=np.int64).reshape(-1, 3):
        truths.setdefault((int(s), int(r)), set()).add(int(o))
    return truths


def resolve_forecast(meta: Mapping[str, Any], truths: set[int]) -> Resolved | None:
    """Score one FORECAST meta against the step's true objects; None when void."""
    if not truths:
        return None
    candidates = meta["candidates"]
    probabilities = np.array([c["p"] for c in candidates] + [meta.get("other", 0.0)], np.float64)
    right = [i for i, c in enumerate(candidates) if c["id"] in truths]
    truth = max(right, key=lambda i: probabilities[i]) if right else len(candidates)
    onehot = np.zeros_like(probabilities)
    onehot[truth] = 1.0
    return Resolved(
        id=str(meta.get("id", "")),
        probabilities=probabilities,
        truth=truth,
        hit=bool(candidates) and candidates[0]["id"] in truths,
        in_candidates=bool(right),
        brier=float(((probabilities - onehot) ** 2).sum()),
        log_score=float(np.log(max(probabilities[truth], 1e-12))),
    )


#: ``forecast meta -> {candidate id: true probability}``, or None where the truth is unknown.
TrueDistribution = Callable[[Mapping[str, Any]], Mapping[int, float] | None]


def against_truth(meta: Mapping[str, Any], true: Mapping[int, float]) -> tuple[float, float]:
    """(MAE, KL(truth || forecast)) over the K candidates and ``other``."""
    p = np.array([c["p"] for c in meta["candidates"]] + [meta.get("other", 0.0)], np.float64)
    q = np.array([true.get(c["id"], 0.0) for c in meta["candidates"]], np.float64)
    q = np.append(q, max(0.0, 1.0 - q.sum()))
    kept = q > 0
    kl = float((q[kept] * np.log(q[kept] / np.maximum(p[kept], 1e-12))).sum())
    return float(np.abs(p - q).mean()), kl


def step_card(
    step: int,
    forecasts: Sequence[Mapping[str, Any]],
    triples: np.ndarray,
    true_distribution: TrueDistribution | None = None,
) -> dict[str, Any]:
    """The per-step record: every forecast resolved, void ones counted; with the world's true
    distribution, every forecast (void or not) compared with it."""
    truths = true_objects(triples)
    resolved = []
    void = 0
    mae, kl = [], []
    for meta in forecasts:
        true = true_distribution(meta) if true_distribution is not None else None
        if true is not None:
            error, divergence = against_truth(meta, true)
            mae.append(error)
            kl.append(divergence)
        query = meta["query"]
        outcome = resolve_forecast(meta, truths.get((query["subject"], query["relation"]), set()))
        if outcome is None:
            void += 1
        else:
            resolved.append(outcome)
    return {
        "step": step,
        "void": void,
        "probabilities": [r.probabilities.tolist() for r in resolved],
        "truth": [r.truth for r in resolved],
        "hit": [r.hit for r in resolved],
        "in_candidates": [r.in_candidates for r in resolved],
        "truth_mae": mae,
        "truth_kl": kl,
    }


def rolling(cards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Acc@1, Brier, ECE, NLL and recall@K over the given per-step records."""
    rows = [
        (p, t) for card in cards for p, t in zip(card["probabilities"], card["truth"], strict=True)
    ]
    n = len(rows)
    summary: dict[str, Any] = {
        "steps": [int(c["step"]) for c in cards],
        "n": n,
        "void": int(sum(c["void"] for c in cards)),
    }
    errors = [e for c in cards for e in c.get("truth_mae", [])]
    if errors:
        divergences = [d for c in cards for d in c["truth_kl"]]
        summary |= {"truth_mae": float(np.mean(errors)), "truth_kl": float(np.mean(divergences))}
    if not n:
        return summary
    width = max(len(p) for p, _ in rows)
    probs = np.zeros((n, width))
    for i, (p, _) in enumerate(rows):
        probs[i, : len(p) - 1] = p[:-1]
        probs[i, -1] = p[-1]  # ``other`` last, whatever K each forecast had
    truth = np.array([t if t < len(p) - 1 else width - 1 for p, t in rows])
    hits = np.array([h for c in cards for h in c["hit"]], dtype=bool)
    found = np.array([f for c in cards for f in c["in_candidates"]], dtype=bool)
    return summary | {
        "acc@1": float(hits.mean()),
        "brier": prob_metrics.brier(probs, truth),
        "ece": prob_metrics.ece(probs, truth),
        "nll": prob_metrics.nll(probs, truth),
        "recall@K": float(found.mean()),
    }
