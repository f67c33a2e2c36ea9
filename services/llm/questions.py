"""Multiple-choice questions for the LLM: options, their order, their words, in batches.

A question comes from one row of the embedding export (training, evaluation) or from one
EMBEDDINGS message (serving); both become the same :class:`QuestionBatch`, so the model is
trained on exactly what it is served.

- **K options from a larger export.** A K=10 tgl-mcq row is a gold plus 9 negatives drawn at
  random from the recent entities; keeping the gold and a random K-1 of those negatives is a
  K-option question of the same protocol, so one export serves K = 4, 6 and 10.
- **Seeded random order.** Options are shown in an order drawn from ``(seed, row, K)``, in every
  protocol, so a letter carries no information about the graph's ranking or the gold.
- **Words.** Names come from the export's ``entity_names`` / ``relation_names`` (an inverse
  relation ``r + R`` is "name (inverse)"); the date is step ``t`` in the dataset's calendar; a
  recipe with ``facts`` adds the subject's latest facts before ``t`` (prompt_facts.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from services.llm.prompt import LETTERS, QuestionText, format_date
from services.llm.prompt_facts import FactIds, FactSource
from shared.calendar import step_date
from shared.embedding_export import ExportedSplit


@dataclass(frozen=True)
class Vocabulary:
    """Display names in id order and the calendar of the steps: what a prompt needs in words."""

    entities: Sequence[str]
    relations: Sequence[str]
    calendar: dict[str, Any] | None
    facts: FactSource | None = None
    """Where a question's recent facts come from (services/llm/prompt_facts.py), if shown."""

    @classmethod
    def of_export(cls, export: ExportedSplit, facts: FactSource | None = None) -> Vocabulary:
        m = export.manifest
        return cls(m["entity_names"], m["relation_names"], m.get("calendar"), facts)

    def with_facts(self, facts: FactSource | None) -> Vocabulary:
        return replace(self, facts=facts)

    def fact_line(self, fact: FactIds) -> str:
        t, s, r, o = fact
        return f"{self.date(t)} {self.entity(s)} — {self.relation(r)} — {self.entity(o)}"

    def entity(self, entity_id: int) -> str:
        if 0 <= entity_id < len(self.entities):
            return self.entities[entity_id]
        return f"entity {entity_id}"  # newer than the vocabulary the model was trained with

    def relation(self, relation_id: int) -> str:
        count = len(self.relations)
        if 0 <= relation_id < count:
            return self.relations[relation_id]
        if count <= relation_id < 2 * count:
            return f"{self.relations[relation_id - count]} (inverse)"
        return f"relation {relation_id}"

    def date(self, step: int) -> str:
        when = step_date(self.calendar, step) if self.calendar else None
        seconds = self.calendar["step_seconds"] if self.calendar else None
        return format_date(when, step, seconds)

    def question(self, subject: int, relation: int, step: int, options: np.ndarray) -> QuestionText:
        return QuestionText(
            subject=self.entity(subject),
            relation=self.relation(relation),
            date=self.date(step),
            options=[self.entity(int(c)) for c in options],
            facts=[self.fact_line(f) for f in self.facts(subject, step)] if self.facts else (),
        )


@dataclass(frozen=True)
class QuestionBatch:
    """B questions with K options each, options already in their presented (letter) order.

    ``subject [B,T,d]``, ``relation [B,d]``, ``candidates [B,K,T,d]``, ``scores [B,K]`` (graph
    logits), ``query [B,d]``, ``candidate_ids [B,K]``; ``target [B]`` is the gold's letter index,
    -1 where it is unknown (serving) or absent (a live retrieval miss).
    """

    subject: np.ndarray
    relation: np.ndarray
    candidates: np.ndarray
    scores: np.ndarray
    query: np.ndarray
    candidate_ids: np.ndarray
    target: np.ndarray
    texts: list[QuestionText]

    def __len__(self) -> int:
        return len(self.target)

    @property
    def num_options(self) -> int:
        return int(self.candidate_ids.shape[1])


def option_positions(
    gold: int, available: int, k: int, seed: int, row: int
) -> tuple[np.ndarray, int]:
    """Which of ``available`` candidates to show, in letter order, and the gold's letter (-1 when
    the gold is not among them). With fewer options than candidates the gold is always kept."""
    if not 1 < k <= min(available, len(LETTERS)):
        raise ValueError(f"K={k} options from {available} candidates (at most {len(LETTERS)})")
    rng = np.random.default_rng([seed, row, k])
    if k < available:
        if gold < 0:
            raise ValueError(f"row {row}: K={k} < {available} needs the gold among the candidates")
        others = np.delete(np.arange(available), gold)
        keep = np.append(rng.choice(others, size=k - 1, replace=False), gold)
    else:
        keep = np.arange(available)
    order = keep[rng.permutation(k)]
    hits = np.flatnonzero(order == gold)
    return order, int(hits[0]) if len(hits) else -1


def export_batch(
    export: ExportedSplit, vocab: Vocabulary, rows: np.ndarray, k: int, steps: int, seed: int
) -> QuestionBatch:
    """Questions of the export's ``rows`` with ``k`` options and the last ``steps`` history steps."""
    a = export.arrays
    if steps > export.steps:
        raise ValueError(f"{steps} history steps asked, the export has T={export.steps}")
    rows = np.asarray(rows, dtype=np.int64)
    picks = [
        option_positions(int(a["gold_index"][r]), export.num_candidates, k, seed, int(r))
        for r in rows
    ]
    order = np.stack([p[0] for p in picks])
    take = rows[:, None]
    candidate_ids = a["candidate_ids"][take, order]
    queries = a["queries"][rows]
    return QuestionBatch(
        subject=np.asarray(a["subject"][rows, -steps:]),
        relation=np.asarray(a["relation"][rows]),
        candidates=np.asarray(a["candidates"][take, order][:, :, -steps:]),
        scores=np.asarray(a["scores"][take, order]),
        query=np.asarray(a["query"][rows]),
        candidate_ids=candidate_ids,
        target=np.array([p[1] for p in picks], dtype=np.int64),
        texts=[
            vocab.question(int(q[0]), int(q[1]), int(q[3]), ids)
            for q, ids in zip(queries, candidate_ids, strict=True)
        ],
    )


def stack_batches(batches: Sequence[QuestionBatch]) -> QuestionBatch:
    """One batch of several (the service's per-message batches, all with the same K and T)."""
    fields = ("subject", "relation", "candidates", "scores", "query", "candidate_ids", "target")
    stacked = {f: np.concatenate([getattr(b, f) for b in batches]) for f in fields}
    return QuestionBatch(**stacked, texts=[t for b in batches for t in b.texts])
