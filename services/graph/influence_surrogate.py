"""The surrogate whose influence scores choose the LLM's training questions: RE-GCN with
everything fixed but its decoder's final layer.

TGL-LLM scores training samples by their influence on a surrogate's loss, restricted to one
layer (a full RE-GCN Hessian is out of reach). Ours is the last layer of the entity decoder
(ConvTransE's ``fc``: ``C * d -> d`` weights and bias); below it everything is a fixed function
of the question, so each question becomes a sample of three parts:

- ``features [C * d]``: the convolution features of ``(tanh h_s, r)`` at its step, evaluation mode
  (model.conv_features), from the same recent window the export walked;
- ``step``: which step's entity table it is scored against;
- ``gold``: its object.

The loss of a sample is the model's own cross-entropy of the gold object over every entity:
``fc -> bn2 (running statistics) -> relu``, dotted with ``tanh(H_t)`` of its step. At the trained
weights its logits are exactly the export's graph scores (the tests check that), so the
surrogate is the graph model, not an imitation of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from services.graph import model
from services.graph.embeddings import GraphModel
from services.graph.export import timeline
from services.graph.history import RecentWindow
from services.graph.influence import Loss
from shared.embedding_export import ExportedSplit
from shared.tkg_dataset import TkgDataset

LAYER = "entity_decoder.fc"
"""What the influence is taken over (named in the scores' manifest)."""


@dataclass(frozen=True)
class Surrogate:
    """The fixed parts and the samples: ``params`` are the final layer's trained weights."""

    params: dict[str, jax.Array]
    samples: dict[str, jax.Array]
    loss: Loss
    logits: Callable[[dict[str, jax.Array], dict[str, jax.Array]], jax.Array]
    """``[N]`` logits of every entity as one sample's object (what the loss is taken of)."""


def decoder_samples(
    graph_model: GraphModel, dataset: TkgDataset, export: ExportedSplit, min_bucket: int = 64
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every export row as a sample (``features``, ``step``, ``gold``), and the ``[S, N, d]``
    entity tables ``tanh(H_t)`` of the steps the rows are at (``step`` indexes them)."""
    cfg = graph_model.cfg
    queries = np.asarray(export.arrays["queries"])
    window = RecentWindow(
        cfg.num_entities, cfg.num_relations, cfg.history, export.steps, min_bucket
    )
    features = np.zeros((len(queries), cfg.channels * cfg.dim), dtype=np.float32)
    step_of_row = np.zeros(len(queries), dtype=np.int32)
    tables = []
    wanted = set(queries[:, 3].tolist())
    last = max(wanted)
    for step, triples, _ in timeline(dataset):
        if step > last:
            break
        if step in wanted:
            rows = np.flatnonzero(queries[:, 3] == step)
            emb = graph_model.embed(window)
            features[rows] = np.asarray(
                _features(graph_model, emb.entities[-1], emb.relations, queries[rows, :2])
            )
            step_of_row[rows] = len(tables)
            tables.append(np.asarray(jnp.tanh(emb.entities[-1]), dtype=np.float32))
        window.advance(step, triples)
    samples = {"features": features, "step": step_of_row, "gold": queries[:, 2].astype(np.int32)}
    return samples, np.stack(tables)


def _features(
    graph_model: GraphModel, entities: jax.Array, relations: jax.Array, pairs: np.ndarray
) -> jax.Array:
    decoder = graph_model.params["entity_decoder"]
    stats = graph_model.batch_stats["entity_decoder"]
    subject = jnp.tanh(entities[pairs[:, 0]])
    relation = relations[pairs[:, 1]]
    keys = (jax.random.PRNGKey(0), jax.random.PRNGKey(0))  # unused: no dropout in evaluation
    mask = jnp.ones(len(pairs))
    x, _ = model.conv_features(
        decoder, stats, subject, relation, mask, graph_model.cfg, keys, False
    )
    return x


def surrogate(
    graph_model: GraphModel, samples: dict[str, np.ndarray], tables: np.ndarray
) -> Surrogate:
    """The final layer's weights, the samples on the device, and the per-sample loss."""
    decoder = graph_model.params["entity_decoder"]
    stats = graph_model.batch_stats["entity_decoder"]
    cfg = graph_model.cfg
    table = jnp.asarray(tables)
    fixed: dict[str, Any] = {k: v for k, v in decoder.items() if k not in ("fc_w", "fc_b")}
    key = jax.random.PRNGKey(0)  # unused: no dropout in evaluation

    def logits(theta: dict[str, jax.Array], z: dict[str, jax.Array]) -> jax.Array:
        out, _ = model.decoder_head(
            {**fixed, **theta}, stats, z["features"][None], jnp.ones(1), cfg, key, False
        )
        return out[0] @ table[z["step"]].T

    def loss(theta: dict[str, jax.Array], z: dict[str, jax.Array]) -> jax.Array:
        return -jax.nn.log_softmax(logits(theta, z))[z["gold"]]

    return Surrogate(
        params={"fc_w": decoder["fc_w"], "fc_b": decoder["fc_b"]},
        samples={k: jnp.asarray(v) for k, v in samples.items()},
        loss=loss,
        logits=logits,
    )
