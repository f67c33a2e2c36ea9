"""RE-GCN (Li et al., SIGIR 2021, arXiv:2104.10353) as pure functions of parameters and inputs.

Equation numbers are the paper's:

- Eq. (1)  relation-aware GCN over the snapshot ``G_t``:
  ``h_o^{l+1} = f( 1/c_o * sum_{(s,r,o) in G_t} W_1^l (h_s^l + r) + W_2^l h_o^l )``
- Eq. (2)-(3) time gate: ``H_t = U_t * H_t^w + (1 - U_t) * H_{t-1}``, ``U_t = sigmoid(W_4 H_{t-1} + b)``
- Eq. (4)-(5) relation evolution: ``r'_t = [r ; meanpool(H_{t-1}, V_{r,t})]``, ``R_t = GRU(R_{t-1}, R'_t)``
- Eq. (6)  static graph: one R-GCN layer over the entity-word graph (block-diagonal weights)
- Eq. (7)-(8) static constraint: ``theta_x = min(gamma * x, 90 deg)``,
  ``L_st = sum_x sum_i max(cos theta_x - cos(h^s_i, h_{x,i}), 0)``
- Eq. (9)-(10) ConvTransE decoders for entities (s, r -> o) and relations (s, o -> r)
- Eq. (11)-(13) ``L = alpha * L_e + (1 - alpha) * L_r + L_st``

Where the paper leaves a choice open, the authors' code (Lee-zix/RE-GCN: ``UnionRGCNLayer``,
``RecurrentRGCN``, ``ConvTransE``/``ConvTransR``) decides, and the docstrings say so: ``f`` is
``F.rrelu`` called with its functional default ``training=False``, i.e. a leaky ReLU of slope
``(1/8 + 1/3) / 2``; ``c_o`` is the in-degree with inverse edges; the self-loop weight ``W_2`` is
replaced by a second matrix for entities with no edge at ``t``; "layer norm" is row-wise L2
normalisation; the decoders use batch norm, whose running statistics are explicit state
(``batch_stats``) next to ``params``.

Padding convention (see ``snapshots``): index ``N`` (entities) and ``2R`` (relations) are out of
range; :func:`gather_rows` reads zeros there and ``segment_sum`` over ``N``/``2R`` segments drops
them. Padded queries carry ``mask == 0`` and are left out of losses and batch statistics.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jraph

from services.graph.config import ModelConfig
from services.graph.snapshots import Example, History, Queries

Params = dict[str, Any]
BatchStats = dict[str, Any]

#: ``F.rrelu(x)`` with ``training=False`` (its default): leaky ReLU with the mean of [1/8, 1/3].
RRELU_SLOPE = (1.0 / 8.0 + 1.0 / 3.0) / 2.0
#: ``F.normalize``'s epsilon.
NORM_EPS = 1e-12
#: ``nn.init.calculate_gain('relu')``, the gain RE-GCN uses for its xavier-initialised weights.
RELU_GAIN = math.sqrt(2.0)


class Encoding(NamedTuple):
    """What the evolution unit hands the decoders and the static constraint.

    ``entities`` is ``H_t`` after the last history step (L2-normalised when ``layer_norm``),
    ``relations`` is ``R_t``; ``evolved`` stacks ``H`` after each history slot (``k, N, d``) and
    ``static`` is the static embedding (``None`` without the static graph).
    """

    entities: jax.Array
    relations: jax.Array
    evolved: jax.Array
    static: jax.Array | None


# --------------------------------------------------------------------------- initialisation


def init_params(key: jax.Array, cfg: ModelConfig) -> Params:
    """Parameters, initialised as the original (xavier with ReLU gain, torch layer defaults)."""
    keys = iter(jax.random.split(key, 16))
    d, n_rel = cfg.dim, cfg.num_relations_total
    params: Params = {
        # dynamic_emb: normal_(); emb_rel: xavier_normal_
        "entity": jax.random.normal(next(keys), (cfg.num_entities, d)),
        "relation": _xavier_normal(next(keys), (n_rel, d)),
        "gcn": {f"layer_{i}": _init_gcn_layer(next(keys), d) for i in range(cfg.num_layers)},
        "time_gate": {
            "w": _xavier_uniform(next(keys), (d, d), RELU_GAIN),
            "b": jnp.zeros(d),
        },
        "relation_gru": _init_gru(next(keys), 2 * d, d),
        "entity_decoder": _init_decoder(next(keys), cfg),
        "relation_decoder": _init_decoder(next(keys), cfg),
    }
    if cfg.use_static:
        params["static"] = _init_static(next(keys), cfg)
    return params


def init_batch_stats(cfg: ModelConfig) -> BatchStats:
    """Running mean 0 and variance 1 for every batch norm of both decoders (torch defaults)."""

    def stats(size: int) -> dict[str, jax.Array]:
        return {"mean": jnp.zeros(size), "var": jnp.ones(size)}

    decoder = {"bn0": stats(2), "bn1": stats(cfg.channels), "bn2": stats(cfg.dim)}
    return {"entity_decoder": decoder, "relation_decoder": jax.tree.map(jnp.copy, decoder)}


def _init_gcn_layer(key: jax.Array, d: int) -> Params:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w_neighbor": _xavier_uniform(k1, (d, d), RELU_GAIN),
        "w_loop": _xavier_uniform(k2, (d, d), RELU_GAIN),
        "w_evolve_loop": _xavier_uniform(k3, (d, d), RELU_GAIN),
    }


def _init_gru(key: jax.Array, input_size: int, hidden: int) -> Params:
    """``nn.GRUCell``: every weight and bias uniform in +-1/sqrt(hidden); gates ordered r, z, n."""
    bound = 1.0 / math.sqrt(hidden)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {
        "w_input": _uniform(k1, (input_size, 3 * hidden), bound),
        "w_hidden": _uniform(k2, (hidden, 3 * hidden), bound),
        "b_input": _uniform(k3, (3 * hidden,), bound),
        "b_hidden": _uniform(k4, (3 * hidden,), bound),
    }


def _init_decoder(key: jax.Array, cfg: ModelConfig) -> Params:
    """ConvTransE/ConvTransR: torch ``Conv1d(2, C, K)``, ``Linear(C*d, d)``, three batch norms."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    conv_bound = 1.0 / math.sqrt(2 * cfg.kernel_size)
    fc_bound = 1.0 / math.sqrt(cfg.channels * cfg.dim)

    def affine(size: int) -> dict[str, jax.Array]:
        return {"scale": jnp.ones(size), "bias": jnp.zeros(size)}

    return {
        "conv_w": _uniform(k1, (cfg.channels, 2, cfg.kernel_size), conv_bound),
        "conv_b": _uniform(k2, (cfg.channels,), conv_bound),
        "fc_w": _uniform(k3, (cfg.channels * cfg.dim, cfg.dim), fc_bound),
        "fc_b": _uniform(k4, (cfg.dim,), fc_bound),
        "bn0": affine(2),
        "bn1": affine(cfg.channels),
        "bn2": affine(cfg.dim),
    }


def _init_static(key: jax.Array, cfg: ModelConfig) -> Params:
    """Word embeddings (xavier normal) and block-diagonal weights per static edge type.

    The original stores the blocks as a ``(2K, B * s * s)`` matrix and xavier-initialises that
    matrix, so its fans are ``B * s * s`` and ``2K``; the same bound is used here.
    """
    k1, k2 = jax.random.split(key)
    sub = cfg.dim // cfg.num_blocks
    kinds = 2 * cfg.num_static_relations
    fan_sum = cfg.num_blocks * sub * sub + kinds
    bound = RELU_GAIN * math.sqrt(6.0 / fan_sum)
    return {
        "words": _xavier_normal(k1, (cfg.num_words, cfg.dim)),
        "blocks": _uniform(k2, (kinds, cfg.num_blocks, sub, sub), bound),
    }


def _xavier_uniform(key: jax.Array, shape: tuple[int, int], gain: float) -> jax.Array:
    return _uniform(key, shape, gain * math.sqrt(6.0 / (shape[0] + shape[1])))


def _xavier_normal(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    return jax.random.normal(key, shape) * math.sqrt(2.0 / (shape[0] + shape[1]))


def _uniform(key: jax.Array, shape: tuple[int, ...], bound: float) -> jax.Array:
    return jax.random.uniform(key, shape, minval=-bound, maxval=bound)


# --------------------------------------------------------------------------- building blocks


def l2_normalize(x: jax.Array) -> jax.Array:
    """Row-wise ``x / max(||x||, eps)``: RE-GCN's "layer norm" (``F.normalize``)."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, NORM_EPS)


def rrelu(x: jax.Array) -> jax.Array:
    """The activation ``f`` of Eq. (1) and (6) as the original evaluates it (see module doc)."""
    return jnp.where(x >= 0, x, RRELU_SLOPE * x)


def dropout(key: jax.Array, x: jax.Array, rate: float, train: bool) -> jax.Array:
    """Inverted dropout (``nn.Dropout``); identity outside training."""
    if not train or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def gather_rows(table: jax.Array, index: jax.Array) -> jax.Array:
    """``table[index]`` reading zeros for the out-of-range padding index (never NaN)."""
    return jnp.take(table, index, axis=0, mode="fill", fill_value=0)


def in_degree(graph: jraph.GraphsTuple, num_nodes: int) -> jax.Array:
    """Incoming edges per node (inverse edges included); padding edges are dropped."""
    ones = jnp.ones(graph.receivers.shape, jnp.float32)
    return jax.ops.segment_sum(ones, graph.receivers, num_nodes)


def rgcn_layer(p: Params, graph: jraph.GraphsTuple, h: jax.Array, rel: jax.Array) -> jax.Array:
    """One layer of Eq. (1) on one snapshot: ``h`` is ``(N, d)``, ``rel`` is ``R_t`` ``(2R, d)``.

    Messages ``W_1 (h_s + r)`` are gathered per edge and summed at the object, then scaled by
    ``1/c_o`` with ``c_o`` the in-degree (1 when 0). The self-loop term ``W_2 h_o`` uses
    ``w_loop`` for entities with an edge at ``t`` and ``w_evolve_loop`` for the others, as the
    original ``UnionRGCNLayer`` does.
    """
    num_nodes = h.shape[0]
    messages = (gather_rows(h, graph.senders) + gather_rows(rel, graph.edges)) @ p["w_neighbor"]
    degree = in_degree(graph, num_nodes)
    neighbors = jax.ops.segment_sum(messages, graph.receivers, num_nodes)
    neighbors = neighbors / jnp.maximum(degree, 1.0)[:, None]
    self_loop = jnp.where((degree > 0)[:, None], h @ p["w_loop"], h @ p["w_evolve_loop"])
    return rrelu(neighbors + self_loop)


def rgcn(
    layers: list[Params],
    graph: jraph.GraphsTuple,
    h: jax.Array,
    rel: jax.Array,
    key: jax.Array,
    rate: float,
    train: bool,
) -> jax.Array:
    """``H_t^w``: Eq. (1) stacked; every layer sees the same ``R_t``, dropout after each layer."""
    for p, layer_key in zip(layers, jax.random.split(key, len(layers)), strict=True):
        h = dropout(layer_key, rgcn_layer(p, graph, h, rel), rate, train)
    return h


def relation_pool(
    h: jax.Array, pair_relation: jax.Array, pair_entity: jax.Array, num_relations: int
) -> jax.Array:
    """Mean of ``H_{t-1}`` over the entities ``V_{r,t}`` each relation touches (Eq. 4).

    Relations absent at ``t`` get zeros, as in the original.
    """
    total = jax.ops.segment_sum(gather_rows(h, pair_entity), pair_relation, num_relations)
    ones = jnp.ones(pair_relation.shape, h.dtype)
    count = jax.ops.segment_sum(ones, pair_relation, num_relations)
    return total / jnp.maximum(count, 1.0)[:, None]


def gru_cell(p: Params, x: jax.Array, h: jax.Array) -> jax.Array:
    """``nn.GRUCell`` (Eq. 5): ``h' = (1 - z) * n + z * h`` with reset ``r`` inside ``n``."""
    x_r, x_z, x_n = jnp.split(x @ p["w_input"] + p["b_input"], 3, axis=-1)
    h_r, h_z, h_n = jnp.split(h @ p["w_hidden"] + p["b_hidden"], 3, axis=-1)
    reset = jax.nn.sigmoid(x_r + h_r)
    update = jax.nn.sigmoid(x_z + h_z)
    candidate = jnp.tanh(x_n + reset * h_n)
    return (1.0 - update) * candidate + update * h


def time_gate(p: Params, h_prev: jax.Array, h_new: jax.Array) -> jax.Array:
    """Eq. (2)-(3): keep part of ``H_{t-1}`` where the gate says the entity changed little."""
    gate = jax.nn.sigmoid(h_prev @ p["w"] + p["b"])
    return gate * h_new + (1.0 - gate) * h_prev


def static_embedding(
    p: Params, graph: jraph.GraphsTuple, entity: jax.Array, cfg: ModelConfig
) -> jax.Array:
    """Eq. (6): one R-GCN layer over the entity-word graph, block-diagonal ``W_{r_s}``.

    Node features are the entity table followed by the word embeddings; the message of an edge
    of type ``k`` multiplies each of the ``B`` blocks of ``h_src`` by that type's ``s x s`` block.
    No self-loop, bias or dropout (the original ``RGCNBlockLayer`` as configured).
    """
    x = jnp.concatenate([entity, p["words"]])
    num_nodes, sub = x.shape[0], cfg.dim // cfg.num_blocks
    src = gather_rows(x, graph.senders).reshape(-1, cfg.num_blocks, sub)
    weights = gather_rows(p["blocks"], graph.edges)
    messages = jnp.einsum("ebi,ebio->ebo", src, weights).reshape(-1, cfg.dim)
    total = jax.ops.segment_sum(messages, graph.receivers, num_nodes)
    summed = total / jnp.maximum(in_degree(graph, num_nodes), 1.0)[:, None]
    return rrelu(summed)[: cfg.num_entities]


# --------------------------------------------------------------------------- evolution unit


def _maybe_normalize(x: jax.Array, cfg: ModelConfig) -> jax.Array:
    return l2_normalize(x) if cfg.layer_norm else x


def initial_entities(
    params: Params, static_graph: jraph.GraphsTuple | None, cfg: ModelConfig
) -> tuple[jax.Array, jax.Array | None]:
    """``H_0``: the static embedding when the static graph is on (as the original), else the table."""
    if not cfg.use_static:
        return _maybe_normalize(params["entity"], cfg), None
    if static_graph is None:
        raise ValueError("use_static is on but no static graph was given")
    static = _maybe_normalize(
        static_embedding(params["static"], static_graph, params["entity"], cfg), cfg
    )
    return static, static


def encode(
    params: Params,
    history: History,
    static_graph: jraph.GraphsTuple | None,
    cfg: ModelConfig,
    key: jax.Array,
    train: bool,
) -> Encoding:
    """Evolve entities and relations over the ``k`` history snapshots (``lax.scan``, oldest first).

    Per snapshot: ``R_t`` from the GRU (Eq. 4-5; hidden state ``R`` itself before the first
    snapshot), ``H_t^w`` from the GCN (Eq. 1) with ``R_t``, then the time gate (Eq. 2-3). Empty
    leading slots (``present`` False) leave the state unchanged, which reproduces the shorter
    history the original uses for the first time steps.
    """
    h0, static = initial_entities(params, static_graph, cfg)
    layers = [params["gcn"][f"layer_{i}"] for i in range(cfg.num_layers)]
    n_rel = cfg.num_relations_total

    def step(carry: tuple[jax.Array, jax.Array], slot: tuple) -> tuple[tuple, jax.Array]:
        h, r = carry
        graph, pair_relation, pair_entity, present, slot_key = slot
        pooled = relation_pool(h, pair_relation, pair_entity, n_rel)
        r_input = jnp.concatenate([params["relation"], pooled], axis=-1)
        r_new = _maybe_normalize(gru_cell(params["relation_gru"], r_input, r), cfg)
        h_gcn = rgcn(layers, graph, h, r_new, slot_key, cfg.dropout, train)
        h_new = time_gate(params["time_gate"], h, _maybe_normalize(h_gcn, cfg))
        h_next, r_next = jnp.where(present, h_new, h), jnp.where(present, r_new, r)
        return (h_next, r_next), h_next

    slots = (
        history.graph,
        history.pair_relation,
        history.pair_entity,
        history.present,
        jax.random.split(key, cfg.history),
    )
    (h_last, r_last), evolved = jax.lax.scan(step, (h0, params["relation"]), slots)
    return Encoding(_maybe_normalize(h_last, cfg), r_last, evolved, static)


# --------------------------------------------------------------------------- decoders


def batch_norm(
    p: Params, stats: Params, x: jax.Array, mask: jax.Array, train: bool, cfg: ModelConfig
) -> tuple[jax.Array, Params]:
    """``nn.BatchNorm1d`` over channel axis 1, counting only real queries (``mask`` on axis 0).

    Training normalises with the batch's biased variance and moves the running statistics
    (unbiased variance) by ``bn_momentum``; evaluation uses the running statistics.
    """
    axes = (0, *range(2, x.ndim))
    channel_shape = (1, -1) + (1,) * (x.ndim - 2)
    if train:
        weight = mask.reshape((-1,) + (1,) * (x.ndim - 1))
        count = jnp.sum(mask) * math.prod(x.shape[2:])
        mean = jnp.sum(x * weight, axis=axes) / count
        var = jnp.sum(jnp.square(x - mean.reshape(channel_shape)) * weight, axis=axes) / count
        unbiased = var * count / jnp.maximum(count - 1.0, 1.0)
        m = cfg.bn_momentum
        stats = {
            "mean": (1 - m) * stats["mean"] + m * mean,
            "var": (1 - m) * stats["var"] + m * unbiased,
        }
    else:
        mean, var = stats["mean"], stats["var"]
    inv_std = jax.lax.rsqrt(var + cfg.bn_eps)
    normalized = (x - mean.reshape(channel_shape)) * inv_std.reshape(channel_shape)
    return normalized * p["scale"].reshape(channel_shape) + p["bias"].reshape(channel_shape), stats


def conv1d_same(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """``nn.Conv1d(2, C, K, padding=K // 2)``: ``(Q, 2, d)`` -> ``(Q, C, d)`` (cross-correlation)."""
    pad = w.shape[-1] // 2
    out = jax.lax.conv_general_dilated(
        x, w, window_strides=(1,), padding=[(pad, pad)], dimension_numbers=("NCH", "OIH", "NCH")
    )
    return out + b[None, :, None]


def conv_trans(
    p: Params,
    stats: Params,
    first: jax.Array,
    second: jax.Array,
    mask: jax.Array,
    cfg: ModelConfig,
    key: jax.Array,
    train: bool,
) -> tuple[jax.Array, Params]:
    """The ConvTransE body shared by Eq. (9) and (10): two ``d``-vectors -> one ``d``-vector.

    Stack -> bn0 -> dropout -> conv -> bn1 -> relu -> dropout -> flatten -> fc -> dropout -> bn2
    -> relu, in the order of the original ``ConvTransE.forward``.
    """
    k_in, k_feat, k_hidden = jax.random.split(key, 3)  # as before the split into two parts
    x, body_stats = conv_features(p, stats, first, second, mask, cfg, (k_in, k_feat), train)
    out, s2 = decoder_head(p, stats, x, mask, cfg, k_hidden, train)
    return out, {**body_stats, "bn2": s2}


def conv_features(
    p: Params,
    stats: Params,
    first: jax.Array,
    second: jax.Array,
    mask: jax.Array,
    cfg: ModelConfig,
    keys: tuple[jax.Array, jax.Array],
    train: bool,
) -> tuple[jax.Array, Params]:
    """ConvTransE up to its final layer: stack -> bn0 -> dropout -> conv -> bn1 -> relu ->
    dropout -> flatten, ``(Q, C * d)`` (what the influence surrogate holds fixed); ``keys`` are
    the two dropouts'."""
    k_in, k_feat = keys
    x = jnp.stack([first, second], axis=1)
    x, s0 = batch_norm(p["bn0"], stats["bn0"], x, mask, train, cfg)
    x = dropout(k_in, x, cfg.input_dropout, train)
    x, s1 = batch_norm(
        p["bn1"], stats["bn1"], conv1d_same(x, p["conv_w"], p["conv_b"]), mask, train, cfg
    )
    x = dropout(k_feat, jax.nn.relu(x), cfg.feat_dropout, train)
    return x.reshape(x.shape[0], -1), {"bn0": s0, "bn1": s1}


def decoder_head(
    p: Params,
    stats: Params,
    x: jax.Array,
    mask: jax.Array,
    cfg: ModelConfig,
    key: jax.Array,
    train: bool,
) -> tuple[jax.Array, Params]:
    """ConvTransE's final layer: fc -> dropout -> bn2 -> relu, ``(Q, C * d)`` -> ``(Q, d)``."""
    x = x @ p["fc_w"] + p["fc_b"]
    x = dropout(key, x, cfg.hidden_dropout, train)
    x, s2 = batch_norm(p["bn2"], stats["bn2"], x, mask, train, cfg)
    return jax.nn.relu(x), s2


def entity_scores(
    p: Params,
    stats: Params,
    enc: Encoding,
    q: Queries,
    cfg: ModelConfig,
    key: jax.Array,
    train: bool,
) -> tuple[jax.Array, Params]:
    """Eq. (9) logits ``(Q, N)``: ConvTransE(tanh h_s, r_t) against ``tanh(H_t)``."""
    features, stats = entity_query(p, stats, enc, q, cfg, key, train)
    return features @ jnp.tanh(enc.entities).T, stats


def entity_query(
    p: Params,
    stats: Params,
    enc: Encoding,
    q: Queries,
    cfg: ModelConfig,
    key: jax.Array,
    train: bool,
) -> tuple[jax.Array, Params]:
    """The query vectors ``(Q, d)`` of Eq. (9), ConvTransE(tanh h_s, r_t): an object's logit is
    its dot product with ``tanh(H_t)``, so the LLM stage can be handed the vector itself."""
    subject = jnp.tanh(gather_rows(enc.entities, q.subject))  # padding rows stay 0
    relation = gather_rows(enc.relations, q.relation)
    return conv_trans(p, stats, subject, relation, q.mask, cfg, key, train)


def relation_scores(
    p: Params,
    stats: Params,
    enc: Encoding,
    q: Queries,
    cfg: ModelConfig,
    key: jax.Array,
    train: bool,
) -> tuple[jax.Array, Params]:
    """Eq. (10) logits ``(Q, 2R)``: ConvTransR(tanh h_s, tanh h_o) against ``R_t``."""
    table = jnp.tanh(enc.entities)
    subject, target = gather_rows(table, q.subject), gather_rows(table, q.target)
    features, stats = conv_trans(p, stats, subject, target, q.mask, cfg, key, train)
    return features @ enc.relations.T, stats


# --------------------------------------------------------------------------- objective


def static_loss(enc: Encoding, present: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Eq. (7)-(8): the evolved embedding of step ``x`` may drift ``theta_x`` from the static one.

    ``x`` counts the real history slots from 1 (oldest); with ``angle_grows`` (the original's
    ``--discount 1``) ``theta_x = min(gamma * x, 90 deg)``, otherwise ``gamma``. Summed over all
    entities and slots and weighted by ``static_weight``, as in the original.
    """
    position = jnp.cumsum(present)
    steps = position if cfg.angle_grows else jnp.ones_like(position)
    theta = jnp.deg2rad(jnp.minimum(cfg.angle_degrees * steps, 90.0))
    cosine = jnp.sum(l2_normalize(enc.static)[None] * l2_normalize(enc.evolved), axis=-1)
    violation = jnp.sum(jax.nn.relu(jnp.cos(theta)[:, None] - cosine), axis=-1)
    return cfg.static_weight * jnp.sum(jnp.where(present, violation, 0.0))


def masked_cross_entropy(logits: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the real queries (``nn.CrossEntropyLoss``)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, target[:, None], axis=-1)[:, 0]
    return -jnp.sum(picked * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def loss_fn(
    params: Params,
    batch_stats: BatchStats,
    example: Example,
    static_graph: jraph.GraphsTuple | None,
    key: jax.Array,
    cfg: ModelConfig,
) -> tuple[jax.Array, tuple[dict[str, jax.Array], BatchStats]]:
    """Eq. (11)-(13) for one target step; returns the loss, its parts and the new batch stats."""
    k_enc, k_ent, k_rel = jax.random.split(key, 3)
    enc = encode(params, example.history, static_graph, cfg, k_enc, train=True)
    q = example.queries
    ent_logits, ent_stats = entity_scores(
        params["entity_decoder"], batch_stats["entity_decoder"], enc, q, cfg, k_ent, True
    )
    rel_logits, rel_stats = relation_scores(
        params["relation_decoder"], batch_stats["relation_decoder"], enc, q, cfg, k_rel, True
    )
    static = static_loss(enc, example.history.present, cfg) if cfg.use_static else jnp.zeros(())
    parts = {
        "entity": masked_cross_entropy(ent_logits, q.target, q.mask),
        "relation": masked_cross_entropy(rel_logits, q.relation, q.mask),
        "static": static,
    }
    alpha = cfg.task_weight
    loss = alpha * parts["entity"] + (1.0 - alpha) * parts["relation"] + parts["static"]
    return loss, (parts, {"entity_decoder": ent_stats, "relation_decoder": rel_stats})


def predict(
    params: Params,
    batch_stats: BatchStats,
    example: Example,
    static_graph: jraph.GraphsTuple | None,
    cfg: ModelConfig,
) -> jax.Array:
    """Entity logits ``(Q, N)`` for the queries after the history, in evaluation mode."""
    unused_key = jax.random.PRNGKey(0)  # no dropout in evaluation
    enc = encode(params, example.history, static_graph, cfg, unused_key, train=False)
    logits, _ = entity_scores(
        params["entity_decoder"],
        batch_stats["entity_decoder"],
        enc,
        example.queries,
        cfg,
        unused_key,
        False,
    )
    return logits
