"""What the graph stage hands the LLM: T-step entity embeddings, a relation embedding, K candidates.

TGL-LLM feeds the LLM, for a query ``(s, r, ?, t)``, the subject's and each candidate's
"T-step historical entity embeddings": the model's evolved ``H`` after each of the last ``T``
steps before ``t`` (each an encoding of the ``k`` snapshots ending at that step, exactly what
RE-GCN would use to predict the step after it), and the relation's embedding ``R`` from the newest
encoding. The candidates' scores are RE-GCN's own decoder logits (Eq. 9) from that newest
encoding, so ``scores`` here equal ``model.predict`` on the same history, and ``query`` is the
decoder's vector for ``(s, r)`` that gives them: ``scores == query @ tanh(candidates[:, -1]).T``.
The frame layout is :mod:`shared.graph_frames`'s.

Candidates, per evaluation protocol (DESIGN.md):

- ``live``: the model's own top-K; no gold is injected, so the truth may be missing.
- ``tgl-mcq``: the gold object plus K-1 negatives drawn from the entities seen in the three steps
  before ``t``, never another true object of ``(s, r, t)``; the gold sits at a random position.
  Only where the gold is known (evaluation, export for training).

Everything here is a function of parameters and inputs; the service and the export call the same
functions, so what the LLM is trained on is what it is served. Import only after
``jax_env.configure``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from services.graph import model
from services.graph.artifact import GraphArtifact
from services.graph.config import ModelConfig
from services.graph.history import MCQ_LOOKBACK
from services.graph.snapshots import History, Queries, make_queries, static_graph
from shared.graph_frames import QueryFrames
from shared.manifest import manifest_id

if TYPE_CHECKING:
    from services.graph.history import RecentWindow

PROTOCOLS = ("tgl-mcq", "live")
#: Queries scored per decoder call; smaller batches are padded to a power of two (few compiles).
SCORE_CHUNK = 256


class PoolTooSmallError(ValueError):
    """The steps before ``t`` hold fewer than K-1 admissible negatives for a tgl-mcq question."""


class WindowEmbeddings(NamedTuple):
    """``entities``: ``[T, N, d]`` H after each of the last T steps, oldest first;
    ``relations``: ``[2R, d]`` R from the newest encoding; ``cutoff``: newest step encoded.

    The matrices stay on the device: each query scores against them there and copies back only
    its own rows, not ``N x d`` floats.
    """

    entities: jax.Array
    relations: jax.Array
    cutoff: int | None


@dataclass(frozen=True)
class GraphModel:
    """A loaded RE-GCN: parameters on the device, and the lineage id forecasts will carry.

    ``embed`` and ``live`` bind the pure functions below to this model, so the service can be
    handed a model without importing JAX itself (it must not, before ``jax_env.configure``).
    """

    cfg: ModelConfig
    params: model.Params
    batch_stats: model.BatchStats
    static_graph: jraph.GraphsTuple | None
    artifact_id: str

    @classmethod
    def from_artifact(cls, artifact: GraphArtifact) -> GraphModel:
        cfg = artifact.model_config
        graph = None
        if cfg.use_static:
            graph = static_graph(artifact.static_triples, cfg.num_entities)[0]
        return cls(
            cfg=cfg,
            params=jax.tree.map(jnp.asarray, artifact.params),
            batch_stats=jax.tree.map(jnp.asarray, artifact.batch_stats),
            static_graph=graph,
            artifact_id=manifest_id(artifact.manifest),
        )

    def embed(self, window: RecentWindow) -> WindowEmbeddings:
        """The T-step embeddings of the window's current state."""
        return window_embeddings(self, window.histories(), window.last_step)

    def live(
        self, emb: WindowEmbeddings, subject: int, relation: int, k: int
    ) -> tuple[np.ndarray, QueryFrames]:
        """Candidate ids and frames of one query under the live protocol (the model's top-K)."""
        scores, query = entity_scores(self, emb, np.array([subject]), np.array([relation]))
        candidates = live_candidates(scores[0], k)
        return candidates, query_frames(emb, subject, relation, candidates, scores[0], query[0])


# --------------------------------------------------------------------------- embeddings


def window_embeddings(
    graph_model: GraphModel, histories: History, cutoff: int | None
) -> WindowEmbeddings:
    """Encode the T stacked histories (``RecentWindow.histories``) in evaluation mode."""
    entities, relations = _encode_steps(
        graph_model.params, histories, graph_model.static_graph, graph_model.cfg
    )
    return WindowEmbeddings(entities, relations, cutoff)


@partial(jax.jit, static_argnames="cfg")
def _encode_steps(
    params: model.Params,
    histories: History,
    graph: jraph.GraphsTuple | None,
    cfg: ModelConfig,
) -> tuple[jax.Array, jax.Array]:
    """``lax.map`` over the T histories (one at a time: memory of one encoding, not T)."""
    key = jax.random.PRNGKey(0)  # unused: no dropout in evaluation

    def encode_one(history: History) -> tuple[jax.Array, jax.Array]:
        enc = model.encode(params, history, graph, cfg, key, train=False)
        return enc.entities, enc.relations

    entities, relations = jax.lax.map(encode_one, histories)
    return entities, relations[-1]


def entity_scores(
    graph_model: GraphModel, emb: WindowEmbeddings, subject: np.ndarray, relation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``[Q, N]`` decoder logits of every entity as the object of ``(subject, relation, ?)``, and
    the ``[Q, d]`` decoder query vectors they come from (logits = query @ tanh(H_t)^T)."""
    logits, queries = [], []
    for start in range(0, len(subject), SCORE_CHUNK):
        s, r = subject[start : start + SCORE_CHUNK], relation[start : start + SCORE_CHUNK]
        size = min(SCORE_CHUNK, 1 << max(0, len(s) - 1).bit_length())
        chunk_logits, chunk_queries = _score_chunk(
            graph_model.params["entity_decoder"],
            graph_model.batch_stats["entity_decoder"],
            emb.entities[-1],
            emb.relations,
            make_queries(s, r, np.zeros_like(s), size),
            graph_model.cfg,
        )
        logits.append(np.asarray(chunk_logits, dtype=np.float32)[: len(s)])
        queries.append(np.asarray(chunk_queries, dtype=np.float32)[: len(s)])
    return np.concatenate(logits), np.concatenate(queries)


@partial(jax.jit, static_argnames="cfg")
def _score_chunk(
    decoder: model.Params,
    stats: model.BatchStats,
    entities: jax.Array,
    relations: jax.Array,
    queries: Queries,
    cfg: ModelConfig,
) -> tuple[jax.Array, jax.Array]:
    """Eq. (9) against the newest encoding, as ``model.entity_scores`` (and so ``model.predict``)
    computes it, with the query vectors: logits ``[Q, N]`` and queries ``[Q, d]``."""
    enc = model.Encoding(entities, relations, entities[None], None)
    key = jax.random.PRNGKey(0)  # unused: no dropout in evaluation
    features, _ = model.entity_query(decoder, stats, enc, queries, cfg, key, False)
    return features @ jnp.tanh(entities).T, features


def query_frames(
    emb: WindowEmbeddings,
    subject: int,
    relation: int,
    candidates: np.ndarray,
    scores: np.ndarray,
    query: np.ndarray,
) -> QueryFrames:
    """The five frames of one query (shared.graph_frames): its rows of the window embeddings,
    ``scores [N]`` (its logits of every entity) at the candidates, and its ``query [d]`` vector."""
    rows = _gather_rows(emb.entities, emb.relations, subject, relation, candidates)
    return QueryFrames(
        *(np.asarray(row, dtype=np.float32) for row in rows),
        scores=np.ascontiguousarray(scores[candidates], dtype=np.float32),
        query=np.ascontiguousarray(query, dtype=np.float32),
    )


@jax.jit
def _gather_rows(
    entities: jax.Array,
    relations: jax.Array,
    subject: int,
    relation: int,
    candidates: np.ndarray,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One query's rows of the window embeddings, gathered on the device in one call."""
    return entities[:, subject], relations[relation], jnp.swapaxes(entities[:, candidates], 0, 1)


# --------------------------------------------------------------------------- candidates


def live_candidates(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best-scored entity ids, best first (ties: lower id first)."""
    if not 1 <= k <= len(scores):
        raise ValueError(f"k must be in 1..{len(scores)}, got {k}")
    return np.argsort(-scores, kind="stable")[:k]


def mcq_pool(window: RecentWindow, t: int) -> np.ndarray:
    """Entities seen in the :data:`MCQ_LOOKBACK` steps before ``t`` (never ``t`` or later)."""
    return window.seen_entities(t - MCQ_LOOKBACK, t - 1)


def mcq_rng(seed: int, t: int, subject: int, relation: int, gold: int) -> np.random.Generator:
    """A generator seeded by the question itself: the same question gets the same options
    whatever else is exported with it, and in whatever order."""
    return np.random.default_rng([seed, t, subject, relation, gold])


def mcq_candidates(
    gold: int, true_objects: np.ndarray, pool: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Gold plus ``k - 1`` negatives from ``pool`` minus every true object; returns ids and the
    gold's position. Raises :class:`PoolTooSmallError` when too few negatives are admissible."""
    negatives = np.setdiff1d(pool, np.append(true_objects, gold))
    if len(negatives) < k - 1:
        raise PoolTooSmallError(
            f"{len(negatives)} admissible negatives for gold {gold}, need {k - 1}"
        )
    chosen = rng.choice(negatives, size=k - 1, replace=False)
    position = int(rng.integers(k))
    return np.insert(chosen, position, gold).astype(np.int64), position
