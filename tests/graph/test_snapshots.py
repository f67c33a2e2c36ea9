"""The RE-GCN input pipeline: snapshots, inverse edges, relation-entity sets, padding to buckets."""

from __future__ import annotations

import jraph
import numpy as np
import pytest

from services.graph import snapshots as S

N, R = 5, 3  # entities, relations (inverse of r is r + 3)


def triples_of(graph_like) -> list[tuple[int, int, int]]:
    """(sender, relation, receiver) of every edge, sorted."""
    columns = (graph_like.senders, graph_like.edges, graph_like.receivers)
    return sorted(zip(*(c.tolist() for c in columns), strict=True))


def quads(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def test_split_by_time_groups_and_orders_steps() -> None:
    facts = quads([(0, 0, 1, 7), (1, 1, 2, 3), (2, 0, 3, 7), (3, 2, 4, 5)])
    steps = S.split_by_time(facts)
    assert [int(step[0, 3]) for step in steps] == [3, 5, 7]
    assert steps[2][:, :3].tolist() == [[0, 0, 1], [2, 0, 3]]


def test_snapshot_has_inverse_edges_and_relation_entity_sets() -> None:
    snap = S.snapshot_arrays(quads([(0, 0, 1, 2), (2, 0, 1, 2), (1, 2, 4, 2)]), R)
    edges = sorted(
        zip(snap.senders.tolist(), snap.relations.tolist(), snap.receivers.tolist(), strict=True)
    )
    assert edges == sorted(
        [(0, 0, 1), (2, 0, 1), (1, 2, 4), (1, 3, 0), (1, 3, 2), (4, 5, 1)]
    )  # (o, r + R, s) for each fact
    touched: dict[int, set[int]] = {}
    for rel, ent in zip(snap.pair_relation.tolist(), snap.pair_entity.tolist(), strict=True):
        assert ent not in touched.setdefault(rel, set()), "pairs must be a set per relation"
        touched[rel].add(ent)
    assert touched == {0: {0, 1, 2}, 3: {0, 1, 2}, 2: {1, 4}, 5: {1, 4}}


def test_padding_follows_the_jraph_convention() -> None:
    snap = S.snapshot_arrays(quads([(0, 0, 1, 2), (3, 1, 4, 2)]), R)
    graph, pair_relation, pair_entity = S.pad_snapshot(snap, 8, N, R)
    assert graph.senders.shape == graph.receivers.shape == graph.edges.shape == (8,)
    assert graph.n_node.tolist() == [N, 1] and graph.n_edge.tolist() == [4, 4]
    mask = np.asarray(jraph.get_edge_padding_mask(graph))
    assert mask.tolist() == [True] * 4 + [False] * 4
    assert (graph.senders[~mask] == N).all() and (graph.receivers[~mask] == N).all()
    assert (graph.edges[~mask] == 2 * R).all()
    assert pair_relation.shape == pair_entity.shape == (16,)
    assert (pair_relation[len(snap.pair_relation) :] == 2 * R).all()
    assert (pair_entity[len(snap.pair_entity) :] == N).all()


def test_history_pads_missing_leading_slots() -> None:
    steps = [S.snapshot_arrays(quads([(0, 0, 1, t)]), R) for t in range(2)]
    history = S.make_history(steps, 3, 4, N, R)
    assert history.present.tolist() == [False, True, True]
    assert history.graph.senders.shape == (3, 4)
    assert history.graph.n_edge.tolist() == [[0, 4], [2, 2], [2, 2]]
    assert history.pair_relation.shape == (3, 8)
    longer = S.make_history(steps * 3, 3, 4, N, R)
    assert longer.present.tolist() == [True, True, True]


def test_buckets_bound_the_padded_sizes() -> None:
    assert S.default_buckets(300, 64) == (64, 96, 128, 192, 256, 384)
    assert S.default_buckets(64, 64) == (64,)
    assert S.bucket_size(65, (64, 128)) == 128
    assert S.bucket_size(64, (64, 128)) == 64
    with pytest.raises(ValueError, match="exceed the largest bucket 128"):
        S.bucket_size(129, (64, 128))


def test_example_shares_one_bucket_between_history_and_queries() -> None:
    history = [S.snapshot_arrays(quads([(i % N, 0, (i + 1) % N, 0) for i in range(20)]), R)]
    target = quads([(0, 1, 2, 1), (3, 2, 4, 1)])
    example = S.make_example(history, S.training_queries(target, R), 2, N, R, (8, 16, 64))
    assert example.history.graph.senders.shape == (2, 64)  # 40 edges -> bucket 64
    queries = example.queries
    assert queries.subject.shape == queries.mask.shape == (64,)
    assert queries.mask.sum() == 4
    assert queries.subject[:4].tolist() == [0, 3, 2, 4]
    assert queries.relation[:4].tolist() == [1, 2, 1 + R, 2 + R]
    assert queries.target[:4].tolist() == [2, 4, 0, 3]


def test_static_graph_numbers_words_after_entities(tmp_path) -> None:
    path = tmp_path / "e-w-graph.txt"
    path.write_text("0\t0\t1\n2\t1\t0\n")
    triples = S.load_static_triples(path)
    graph, num_words, num_kinds = S.static_graph(triples, N)
    assert (num_words, num_kinds) == (2, 2)
    assert triples_of(graph) == sorted([(0, 0, N + 1), (2, 1, N + 0), (N + 1, 2, 0), (N + 0, 3, 2)])
    assert graph.n_node.tolist() == [N + 2]
