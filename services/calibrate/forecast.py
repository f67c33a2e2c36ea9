"""A SCORES message -> the forecast a person reads (pure: no sockets, no files).

The llm stage's SCORES reply carries, in the candidates' order, the LLM's letter logits and the
graph's scores (and the recurrency baseline's when the graph stage sends them), the candidate
ids, the display names and date the LLM saw, and the lineage so far. Here the calibrator turns
them into probabilities, ``other`` is added, and the forecast is laid out as the FORECAST
message's meta, with one float32 frame: the probabilities in candidate order, then ``other``.
Where the calibrator holds yardsticks and the recurrency scores came, ``yardsticks`` gives each
baseline's own probabilities of the same candidates (in the meta's order, then its ``other``),
so resolution scores the baseline on the very questions the pipeline answered.

An ABSTAIN message (shared.abstention: the graph model has no embedding for the subject or
relation, first seen after it was trained) becomes a forecast that says so: ``unknown`` lists
what the model lacks, ``candidates`` is empty, ``other`` is null and there is no frame. It
ranks nothing, and resolution counts it apart instead of scoring it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.calibrate.fit import ProtocolCalibration
from shared.abstention import Abstention
from shared.graph_frames import candidate_ids
from shared.protocol import Message, MessageType, new_message

#: The SCORES frames by name, in the order the llm stage sends them.
SCORE_FRAMES = ("llm_scores", "graph_scores", "recurrency_scores")


class ScoresError(ValueError):
    """A SCORES message the calibrator cannot read; the message names the field."""


@dataclass(frozen=True)
class Scored:
    """One checked SCORES message: the query, its candidates and their ``[K, 3]`` features."""

    id: str
    dataset: str
    step: int
    subject: int
    relation: int
    candidates: np.ndarray
    features: np.ndarray
    has_recurrency: bool
    meta: Mapping[str, Any]


def read_scores(message: Message) -> Scored:
    """Check a SCORES message's frames against its meta; raise :class:`ScoresError` naming the
    field at fault."""
    meta = message.meta
    for key in ("step", "subject", "relation"):
        if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool):
            raise ScoresError(f"meta {key!r} must be an integer, got {meta.get(key)!r:.80}")
    frames = list(message.frames)
    if not 2 <= len(frames) <= len(SCORE_FRAMES):
        raise ScoresError(f"{len(frames)} frames, expected {SCORE_FRAMES[:2]} (+ recurrency)")
    k = frames[0].shape[0] if frames[0].ndim == 1 else -1
    if k < 2 or any(f.shape != (k,) for f in frames):
        raise ScoresError(f"frames {[list(f.shape) for f in frames]} must all be [K], K >= 2")
    try:
        ids = candidate_ids(meta, k)
    except ValueError as exc:
        raise ScoresError(str(exc)) from None
    columns = [np.asarray(f, np.float64) for f in frames]
    has_recurrency = len(columns) == 3
    if not has_recurrency:
        # no information: a constant column leaves every calibrator's softmax unchanged
        columns.append(np.zeros(k))
    return Scored(
        id=message.id,
        dataset=str(meta.get("dataset", "")),
        step=int(meta["step"]),
        subject=int(meta["subject"]),
        relation=int(meta["relation"]),
        candidates=ids,
        features=np.stack(columns, axis=-1),
        has_recurrency=has_recurrency,
        meta=meta,
    )


def topic_of(subject: int, relation: int) -> str:
    """``forecast/<subject>/<relation>/``: subscribe to a prefix to follow one subject."""
    return f"forecast/{subject}/{relation}/"


def _names(meta: Mapping[str, Any], k: int) -> tuple[str, str, list[str], str | None]:
    names = meta.get("names") if isinstance(meta.get("names"), Mapping) else {}
    candidates = names.get("candidates")
    ids = meta.get("candidates") or []
    if not isinstance(candidates, list) or len(candidates) != k:
        candidates = [f"entity {i}" for i in ids]
    return (
        str(names.get("subject", f"entity {meta.get('subject')}")),
        str(names.get("relation", f"relation {meta.get('relation')}")),
        [str(c) for c in candidates],
        meta.get("date") if isinstance(meta.get("date"), str) else None,
    )


Evidence = Callable[[int, int, int], Sequence[Mapping[str, Any]]]


def build_forecast(
    scored: Scored,
    calibration: ProtocolCalibration,
    lineage: Mapping[str, Any],
    seq: int,
    evidence: Evidence | None = None,
    evidence_candidates: int = 3,
) -> Message:
    """The FORECAST message of one SCORES message with sequence number ``seq``.

    ``evidence(subject, candidate, step)`` lists the facts that support a candidate (newest
    first); the ``evidence_candidates`` most probable candidates get theirs."""
    full = calibration.forecast(scored.features[None])[0]
    other = float(full[-1]) if full.shape[0] == scored.candidates.shape[0] + 1 else 0.0
    k = len(scored.candidates)
    subject_name, relation_name, names, date = _names(scored.meta, k)
    order = np.argsort(-full[:k], kind="stable")
    candidates = [
        {"id": int(scored.candidates[i]), "name": names[i], "p": float(full[i])} for i in order
    ]
    support = []
    if evidence is not None:
        for entry in candidates[:evidence_candidates]:
            facts = list(evidence(scored.subject, entry["id"], scored.step))
            support.append({"candidate": entry["id"], "facts": facts})
    probabilities = np.append(full[:k], other).astype(np.float32)
    yardsticks = {}
    if scored.has_recurrency:
        for name, calibration_of in calibration.yardsticks.items():
            theirs = calibration_of.forecast(scored.features[None])[0]
            yardsticks[name] = [float(theirs[i]) for i in order] + [float(theirs[k:].sum())]
    return new_message(
        MessageType.FORECAST,
        scored.id,
        [np.ascontiguousarray(probabilities)],
        meta={
            "seq": seq,
            "dataset": scored.dataset,
            "step": scored.step,
            "date": date,
            "query": {
                "subject": scored.subject,
                "subject_name": subject_name,
                "relation": scored.relation,
                "relation_name": relation_name,
            },
            "candidates": candidates,
            "other": other,
            "calibrator": calibration.chosen,
            "evidence": support,
            "recurrency_scores": scored.has_recurrency,
            "yardsticks": yardsticks,
            "lineage": dict(lineage),
            "topic": topic_of(scored.subject, scored.relation),
        },
    )


def build_unknown_forecast(
    abstention: Abstention,
    names: tuple[str, str],
    date: str | None,
    lineage: Mapping[str, Any],
    seq: int,
) -> Message:
    """The FORECAST of an abstention with sequence number ``seq``: the question in words
    (``names`` of subject and relation), what the model lacks, and no ranking."""
    meta = abstention.meta
    return new_message(
        MessageType.FORECAST,
        abstention.id,
        [],
        meta={
            "seq": seq,
            "dataset": str(meta.get("dataset", "")),
            "step": abstention.step,
            "date": date,
            "query": {
                "subject": abstention.subject,
                "subject_name": names[0],
                "relation": abstention.relation,
                "relation_name": names[1],
            },
            "unknown": list(abstention.unknown),
            "candidates": [],
            "other": None,
            "calibrator": None,
            "evidence": [],
            "recurrency_scores": False,
            "yardsticks": {},
            "lineage": dict(lineage),
            "topic": topic_of(abstention.subject, abstention.relation),
        },
    )


def done_message(scores_id: str, trace_id: str | None) -> Message:
    """``done(id)`` back to ingest: the work item is finished."""
    return new_message(MessageType.DONE, scores_id, [], trace_id=trace_id)
