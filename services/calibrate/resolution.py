"""Resolution: score the forecasts of a step against what happened, and roll a scorecard.

A forecast asks "(subject, relation, ?) at step t". When step t's events are in the store and a
later step has data (the step is final, the same rule ingest closes steps by), its true objects
are every ``o`` with ``(subject, relation, o)`` at t. The forecast's truth is then the most
probable true candidate (several true objects are all right answers; only one is needed), or
``other`` when none of them was a candidate. A query with no such event at all is *void*: the
question did not come up, so it is counted but not scored. A forecast *unknown to the model*
(its subject or relation first seen after the graph artifact was trained; it ranks nothing) is
counted apart as ``unknown``, and its share of a step's forecasts is the step's OOV rate.

On the simulator the world's exact next-step distribution is known (shared.sim_truth): each
forecast is also compared with it — mean absolute error over the K candidates and ``other``, and
KL(truth || forecast) — which tells calibration error apart from plain bad luck. A forecast that
carries yardsticks (a baseline's own probabilities of the same candidates) has each scored the
same way, into ``yardsticks`` of the step's card: a card of its own per baseline.
:func:`against_truth` is that comparison on arrays: the live scorecard and ``geopol eval
calibrate --truth`` both call it.
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
    probabilities = forecast_probabilities(meta)
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


def forecast_probabilities(meta: Mapping[str, Any]) -> np.ndarray:
    """``[K + 1]``: a FORECAST's probabilities, its candidates in order, then ``other``."""
    return np.array(
        [c["p"] for c in meta["candidates"]] + [meta.get("other", 0.0)], dtype=np.float64
    )


def against_truth(probabilities: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each forecast against the world's exact distribution: ``[n]`` MAE and ``[n]``
    KL(truth || forecast), both over the K candidates and ``other``.

    ``probabilities [n, K + 1]`` is the forecast of the K candidates, then ``other`` (a zero
    column for a forecast without one); ``true [n, K]`` is the world's probability of each of the
    same candidates, the rest of its mass being ``other``. A forecast probability below 1e-12
    counts as 1e-12 in the KL."""
    p = np.asarray(probabilities, dtype=np.float64)
    q = np.asarray(true, dtype=np.float64)
    if p.ndim != 2 or q.shape != (p.shape[0], p.shape[1] - 1):
        raise ValueError(f"forecasts {p.shape} and truths {q.shape}: expected [n, K+1] and [n, K]")
    q = np.concatenate([q, np.maximum(0.0, 1.0 - q.sum(axis=1, keepdims=True))], axis=1)
    kept = q > 0
    ratio = np.where(kept, q, 1.0) / np.maximum(p, 1e-12)
    kl = np.where(kept, q * np.log(ratio), 0.0).sum(axis=1)
    return np.abs(p - q).mean(axis=1), kl


def as_yardstick(meta: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The forecast the baseline ``name`` made of the same question: its probabilities over the
    same candidates (most probable first) and its own ``other``."""
    theirs = meta["yardsticks"][name]
    candidates = [c | {"p": p} for c, p in zip(meta["candidates"], theirs[:-1], strict=True)]
    candidates.sort(key=lambda c: -c["p"])
    return {**meta, "candidates": candidates, "other": theirs[-1], "yardsticks": {}}


def step_card(
    step: int,
    forecasts: Sequence[Mapping[str, Any]],
    triples: np.ndarray,
    true_distribution: TrueDistribution | None = None,
) -> dict[str, Any]:
    """The per-step record: every forecast resolved, void ones counted; with the world's true
    distribution, every forecast (void or not) compared with it. A yardstick gets a card of its
    own when every forecast the model ranked carries it (so both score the same questions)."""
    truths = true_objects(triples)
    resolved = []
    void = unknown = 0
    mae, kl = [], []
    for meta in forecasts:
        if meta.get("unknown"):
            unknown += 1
            continue
        true = true_distribution(meta) if true_distribution is not None else None
        if true is not None:
            of_candidates = [true.get(c["id"], 0.0) for c in meta["candidates"]]
            error, divergence = against_truth(
                forecast_probabilities(meta)[None], np.array([of_candidates])
            )
            mae.append(float(error[0]))
            kl.append(float(divergence[0]))
        query = meta["query"]
        outcome = resolve_forecast(meta, truths.get((query["subject"], query["relation"]), set()))
        if outcome is None:
            void += 1
        else:
            resolved.append(outcome)
    ranked = [meta for meta in forecasts if not meta.get("unknown")]
    names = set.intersection(*(set(m.get("yardsticks") or {}) for m in ranked)) if ranked else ()
    yardsticks = {
        name: step_card(step, [as_yardstick(m, name) for m in ranked], triples)
        for name in sorted(names)
    }
    return {
        "step": step,
        "void": void,
        "unknown": unknown,
        "forecasts": len(forecasts),
        "yardsticks": yardsticks,
        "probabilities": [r.probabilities.tolist() for r in resolved],
        "truth": [r.truth for r in resolved],
        "hit": [r.hit for r in resolved],
        "in_candidates": [r.in_candidates for r in resolved],
        "truth_mae": mae,
        "truth_kl": kl,
    }


def rolling(cards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Acc@1, Brier, ECE, NLL and recall@K over the given per-step records, and how many
    forecasts were void or unknown to the model (``oov_rate``: unknown over all forecasts)."""
    rows = [
        (p, t) for card in cards for p, t in zip(card["probabilities"], card["truth"], strict=True)
    ]
    n = len(rows)
    unknown = int(sum(c.get("unknown", 0) for c in cards))
    total = int(sum(c.get("forecasts", 0) for c in cards))
    summary: dict[str, Any] = {
        "steps": [int(c["step"]) for c in cards],
        "n": n,
        "void": int(sum(c["void"] for c in cards)),
        "unknown": unknown,
    }
    if total:
        summary["oov_rate"] = unknown / total
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
