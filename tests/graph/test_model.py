"""RE-GCN building blocks against hand computations, bounded compilation, and a tiny training run."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from services.graph import artifact, model, snapshots, trainer
from services.graph.config import ModelConfig, TrainConfig
from shared.tkg_dataset import TkgDataset

SLOPE = 11.0 / 48.0  # F.rrelu(training=False): mean of 1/8 and 1/3


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_rgcn_layer_on_four_nodes_matches_hand_computation() -> None:
    # Facts at t: (0, r0, 1) and (2, r0, 1); R = 1, so the inverse relation is r1.
    # Edges: 0 -r0-> 1, 2 -r0-> 1, 1 -r1-> 0, 1 -r1-> 2; node 3 has no edge at t.
    facts = np.array([[0, 0, 1, 5], [2, 0, 1, 5]])
    snap = snapshots.snapshot_arrays(facts, num_relations=1)
    graph, _, _ = snapshots.pad_snapshot(snap, 8, num_entities=4, num_relations=1)
    h = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
    rel = np.array([[0.5, 0.0], [0.0, -0.5]])
    p = {
        "w_neighbor": np.array([[1.0, 2.0], [0.0, 1.0]]),  # W_1
        "w_loop": np.array([[1.0, 0.0], [0.0, 2.0]]),  # W_2, entities with an edge at t
        "w_evolve_loop": np.array([[0.0, -1.0], [1.0, 0.0]]),  # W_2 for entities without one
    }
    # Node 0: one message from 1 via r1: (h1 + r1) W1 = [0, .5] W1 = [0, .5]; c = 1.
    #         self loop h0 W_loop = [1, 0]              -> [1, .5]
    # Node 1: (h0 + r0) W1 = [1.5, 0] W1 = [1.5, 3]; (h2 + r0) W1 = [1.5, 1] W1 = [1.5, 4]
    #         sum / c=2 = [1.5, 3.5]; + h1 W_loop = [0, 2] -> [1.5, 5.5]
    # Node 2: (h1 + r1) W1 = [0, .5]; + h2 W_loop = [1, 2] -> [1, 2.5]
    # Node 3: no message; h3 W_evolve_loop = [2, -1] [[0, -1], [1, 0]] = [-1, -2] -> rrelu
    expected = np.array([[1.0, 0.5], [1.5, 5.5], [1.0, 2.5], [-1.0 * SLOPE, -2.0 * SLOPE]])
    out = model.rgcn_layer(p, graph, jnp.asarray(h), jnp.asarray(rel))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)


def test_time_gate_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    h_prev, h_new = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    p = {"w": rng.normal(size=(4, 4)), "b": rng.normal(size=4)}
    gate = sigmoid(h_prev @ p["w"] + p["b"])  # U_t = sigma(W_4 H_{t-1} + b)
    expected = gate * h_new + (1 - gate) * h_prev  # H_t = U_t H_t^w + (1 - U_t) H_{t-1}
    out = model.time_gate(jax.tree.map(jnp.asarray, p), jnp.asarray(h_prev), jnp.asarray(h_new))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


def test_relation_gru_step_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    d = 3
    x, h = rng.normal(size=(2, 2 * d)), rng.normal(size=(2, d))
    p = {
        "w_input": rng.normal(size=(2 * d, 3 * d)),
        "w_hidden": rng.normal(size=(d, 3 * d)),
        "b_input": rng.normal(size=3 * d),
        "b_hidden": rng.normal(size=3 * d),
    }
    gx, gh = x @ p["w_input"] + p["b_input"], h @ p["w_hidden"] + p["b_hidden"]
    r = sigmoid(gx[:, :d] + gh[:, :d])
    z = sigmoid(gx[:, d : 2 * d] + gh[:, d : 2 * d])
    n = np.tanh(gx[:, 2 * d :] + r * gh[:, 2 * d :])
    expected = (1 - z) * n + z * h  # torch.nn.GRUCell
    out = model.gru_cell(jax.tree.map(jnp.asarray, p), jnp.asarray(x), jnp.asarray(h))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


def test_relation_pool_is_the_mean_over_touched_entities() -> None:
    h = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    # relation 0 touches {0, 1}, relation 2 touches {3}; the last pair is padding (2R = 4, N = 4)
    pair_relation, pair_entity = np.array([0, 0, 2, 4]), np.array([0, 1, 3, 4])
    out = model.relation_pool(jnp.asarray(h), pair_relation, pair_entity, 4)
    expected = np.array([[2.0, 3.0], [0.0, 0.0], [7.0, 8.0], [0.0, 0.0]])
    np.testing.assert_allclose(np.asarray(out), expected)


def test_conv_with_a_kernel_of_ones_sums_neighbouring_positions() -> None:
    x = np.array([[[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]]])  # (Q=1, 2 channels, d=4)
    # per position the two input channels sum to [11, 22, 33, 44]; zero padding at both ends
    expected = np.array([[[0 + 11 + 22, 11 + 22 + 33, 22 + 33 + 44, 33 + 44 + 0]]]) + 0.5
    out = model.conv1d_same(jnp.asarray(x), jnp.ones((1, 2, 3)), jnp.array([0.5]))
    np.testing.assert_allclose(np.asarray(out), expected)


def test_batch_norm_ignores_padded_queries() -> None:
    cfg = ModelConfig(num_entities=4, num_relations=1, dim=3, use_static=False)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 2, 3))
    x[3] = 1e3  # a padded row: must not move the statistics
    p = {"scale": jnp.ones(2), "bias": jnp.zeros(2)}
    stats = {"mean": jnp.zeros(2), "var": jnp.ones(2)}
    out, new = model.batch_norm(p, stats, jnp.asarray(x), jnp.array([1.0, 1, 1, 0]), True, cfg)
    real = x[:3]
    mean, var = real.mean(axis=(0, 2)), real.var(axis=(0, 2))
    expected = (real - mean[None, :, None]) / np.sqrt(var[None, :, None] + cfg.bn_eps)
    np.testing.assert_allclose(np.asarray(out)[:3], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new["mean"]), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new["var"]), 0.9 + 0.1 * var * 9 / 8, rtol=1e-5)


def test_decoders_score_every_entity_and_relation() -> None:
    cfg = ModelConfig(num_entities=6, num_relations=2, dim=8, channels=3, use_static=False)
    params, stats = model.init_params(jax.random.PRNGKey(0), cfg), model.init_batch_stats(cfg)
    enc = model.Encoding(jnp.ones((6, 8)) * 0.1, jnp.ones((4, 8)) * 0.2, jnp.zeros((3, 6, 8)), None)
    queries = snapshots.make_queries(
        np.array([0, 1, 2]), np.array([0, 3, 1]), np.array([5, 4, 3]), 4
    )

    @jax.jit
    def both(params: dict, stats: dict, key: jax.Array) -> tuple:
        scores = {}
        for train in (True, False):
            ent, _ = model.entity_scores(
                params["entity_decoder"], stats["entity_decoder"], enc, queries, cfg, key, train
            )
            rel, _ = model.relation_scores(
                params["relation_decoder"], stats["relation_decoder"], enc, queries, cfg, key, train
            )
            scores[train] = (ent, rel)
        return scores

    for ent, rel in both(params, stats, jax.random.PRNGKey(1)).values():
        assert ent.shape == (4, 6) and rel.shape == (4, 4)
        assert bool(jnp.isfinite(ent).all() and jnp.isfinite(rel).all())


def test_static_embedding_is_one_block_diagonal_rgcn_layer() -> None:
    cfg = ModelConfig(
        num_entities=2, num_relations=1, dim=2, num_blocks=2, num_words=1, num_static_relations=1
    )
    graph, _, _ = snapshots.static_graph(np.array([[0, 0, 0]]), num_entities=2)
    p = {
        "words": jnp.array([[2.0, -3.0]]),
        # type 0 (entity -> word) and type 1 (word -> entity), each two 1x1 blocks
        "blocks": jnp.array([[[[9.0]], [[9.0]]], [[[0.5]], [[2.0]]]]),
    }
    out = model.static_embedding(p, graph, jnp.zeros((2, 2)), cfg)
    # entity 0 hears word 0 through type 1: [2 * .5, -3 * 2] / c=1 = [1, -6]; entity 1 hears nothing
    np.testing.assert_allclose(np.asarray(out), [[1.0, -6.0 * SLOPE], [0.0, 0.0]], rtol=1e-6)


def test_static_constraint_angle_grows_with_each_real_step() -> None:
    cfg = ModelConfig(
        num_entities=1, num_relations=1, dim=2, num_blocks=1, num_words=1, num_static_relations=1
    )
    deg15 = [math.cos(math.radians(15)), math.sin(math.radians(15))]
    evolved = jnp.array([[[0.0, 1.0]], [deg15], [deg15]])  # slot 0 is an empty leading slot
    enc = model.Encoding(evolved[-1], jnp.zeros((2, 2)), evolved, jnp.array([[1.0, 0.0]]))
    loss = model.static_loss(enc, jnp.array([False, True, True]), cfg)
    # step 1 allows 10 deg (15 deg violates it), step 2 allows 20 deg (15 deg is fine)
    expected = 0.5 * (math.cos(math.radians(10)) - math.cos(math.radians(15)))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_compilations_stay_bounded_by_the_buckets() -> None:
    num_entities, num_relations, buckets = 30, 4, (8, 16, 32)
    cfg = ModelConfig(num_entities, num_relations, dim=8, channels=2, use_static=False)
    rng = np.random.default_rng(3)
    facts = [
        np.column_stack(
            [
                rng.integers(0, num_entities, n),
                rng.integers(0, num_relations, n),
                rng.integers(0, num_entities, n),
                np.full(n, t),
            ]
        )
        for t, n in enumerate(rng.integers(1, 16, size=21))
    ]
    arrays = [snapshots.snapshot_arrays(f, num_relations) for f in facts]
    counter = trainer.TraceCounter()
    predict = trainer.make_predict_step(cfg, counter)
    params, stats = model.init_params(jax.random.PRNGKey(0), cfg), model.init_batch_stats(cfg)
    used = set()
    for t in range(1, 21):
        example = snapshots.make_example(
            arrays[:t],
            snapshots.training_queries(facts[t], num_relations),
            cfg.history,
            num_entities,
            num_relations,
            buckets,
        )
        used.add(example.queries.mask.shape[0])
        predict(params, stats, example, None).block_until_ready()
    assert len(used) >= 2, "the random sizes should span several buckets"
    assert counter.counts == {"predict_step": len(used)}


# --------------------------------------------------------------------------- end to end


def periodic_tkg(num_entities: int = 40, num_relations: int = 5, steps: int = 160) -> TkgDataset:
    """Facts that repeat every 3 steps: each (s, r) has one object, seen 3 steps earlier."""
    rng = np.random.default_rng(0)
    s, r, o = (rng.integers(0, n, 90) for n in (num_entities, num_relations, num_entities))
    _, first = np.unique(s * num_relations + r, return_index=True)
    s, r, o = s[first], r[first], o[first]
    phase = np.arange(len(s)) % 3
    facts = np.concatenate(
        [np.column_stack([s, r, o, np.full(len(s), t)])[phase == t % 3] for t in range(steps)]
    )
    t = facts[:, 3]
    splits = {
        "train": facts[t < 120],
        "valid": facts[(t >= 120) & (t < 140)],
        "test": facts[t >= 140],
    }
    return TkgDataset(
        name="PERIODIC",
        directory=Path("."),
        splits=splits,
        entity_names=[f"e{i}" for i in range(num_entities)],
        relation_names=[f"r{i}" for i in range(num_relations)],
        time_unit="day",
        time_step=1,
        source_sha256={name: "synthetic" for name in splits},
    )


def test_training_learns_reproducibly_and_saves_a_loadable_artifact(tmp_path: Path) -> None:
    dataset = periodic_tkg()
    words = np.array([[e, e % 2, e % 6] for e in range(dataset.num_entities)])
    num_words, num_kinds = snapshots.static_counts(words)
    cfg = ModelConfig(
        num_entities=dataset.num_entities,
        num_relations=dataset.num_relations,
        dim=32,
        channels=8,
        num_blocks=4,
        num_words=num_words,
        num_static_relations=num_kinds,
    )
    train_cfg = TrainConfig(epochs=3, seed=0, buckets=(32, 64, 128))
    result = trainer.train_and_evaluate(
        dataset, cfg, train_cfg, words, tmp_path / "art", progress=False
    )
    random_mrr = sum(1.0 / k for k in range(1, 41)) / 40  # expected MRR of a random ranking
    mrr = [epoch["valid_mrr_filtered"] for epoch in result.epochs]
    assert len(mrr) == 3 and mrr[-1] > mrr[0]
    assert result.best_valid["filtered"]["mrr"] > 3 * random_mrr
    assert result.compiles["train_step"] <= len(train_cfg.buckets)

    rerun = trainer.train_and_evaluate(
        dataset, cfg, replace(train_cfg, epochs=1), words, None, progress=False
    )
    for name in ("loss", "loss_entity", "loss_static", "valid_mrr_filtered"):
        assert rerun.epochs[0][name] == result.epochs[0][name], f"{name} differs with the same seed"

    loaded = artifact.load(tmp_path / "art", num_entities=40, num_relations=5, dim=32)
    assert loaded.manifest["data"]["cutoff_t"] == 119
    timeline = trainer.build_timeline(dataset, train_cfg)
    predict = trainer.make_predict_step(loaded.model_config, trainer.TraceCounter())
    graph, _, _ = snapshots.static_graph(loaded.static_triples, dataset.num_entities)
    again = trainer.evaluate(
        predict, loaded.params, loaded.batch_stats, timeline, "valid", graph, loaded.model_config
    )
    assert again["filtered"]["mrr"] == pytest.approx(result.best_valid["filtered"]["mrr"], rel=1e-6)
