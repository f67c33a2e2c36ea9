"""T-step embeddings equal the model's own encodings; candidates follow their protocol exactly."""

from __future__ import annotations

from functools import partial

import jax
import numpy as np
import pytest

from services.graph import embeddings, model, snapshots
from services.graph.history import RecentWindow
from shared.graph_frames import check_frames

T, K = 3, 4
ENCODE = jax.jit(partial(model.encode, train=False), static_argnames="cfg")
PREDICT = jax.jit(model.predict, static_argnames="cfg")


def filled_window(tiny, upto: int) -> RecentWindow:
    """A window that has seen steps 0..upto-1, i.e. the history of a query at ``upto``."""
    win = RecentWindow(tiny.num_entities, tiny.num_relations, tiny.cfg.history, T)
    for t in range(upto):
        win.advance(t, tiny.triples_at(t))
    return win


def direct_encoding(graph_model, tiny, last: int) -> model.Encoding:
    """RE-GCN's encoding of the k snapshots ending at step ``last``, built as the trainer does."""
    cfg = tiny.cfg
    snaps = [
        snapshots.snapshot_arrays(tiny.facts[tiny.facts[:, 3] == t], cfg.num_relations)
        for t in range(max(0, last - cfg.history + 1), last + 1)
    ]
    hist = snapshots.make_history(snaps, cfg.history, 64, cfg.num_entities, cfg.num_relations)
    return ENCODE(graph_model.params, hist, graph_model.static_graph, cfg, jax.random.PRNGKey(0))


def test_t_step_embeddings_are_the_encodings_ending_at_each_of_the_last_t_steps(
    graph_model, tiny
) -> None:
    emb = graph_model.embed(filled_window(tiny, 6))
    d = tiny.cfg.dim
    assert emb.entities.shape == (T, tiny.num_entities, d)
    assert emb.relations.shape == (2 * tiny.num_relations, d)
    assert emb.entities.dtype == np.float32 and np.isfinite(emb.entities).all()
    assert emb.cutoff == 5
    for slot, last in enumerate([3, 4, 5]):
        enc = direct_encoding(graph_model, tiny, last)
        np.testing.assert_allclose(emb.entities[slot], enc.entities, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb.relations, enc.relations, rtol=1e-5, atol=1e-6)


def test_slots_before_the_first_step_hold_the_initial_entities(graph_model, tiny) -> None:
    emb = graph_model.embed(filled_window(tiny, 1))  # one snapshot: slots 0 and 1 are empty
    initial = model.l2_normalize(graph_model.params["entity"])
    np.testing.assert_allclose(emb.entities[0], initial, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb.entities[1], initial, rtol=1e-5, atol=1e-6)
    assert not np.allclose(emb.entities[2], initial)


def test_scores_equal_model_predict_on_the_same_history(graph_model, tiny) -> None:
    cfg = tiny.cfg
    emb = graph_model.embed(filled_window(tiny, 6))
    subject, relation = np.array([0, 3, 7, 2, 9]), np.array([0, 1, 2, 4, 5])
    scores, query = embeddings.entity_scores(graph_model, emb, subject, relation)
    history = [
        snapshots.snapshot_arrays(tiny.facts[tiny.facts[:, 3] == t], cfg.num_relations)
        for t in range(6)
    ]
    example = snapshots.make_example(
        history, (subject, relation, np.zeros_like(subject)), cfg.history,
        cfg.num_entities, cfg.num_relations, (64,),
    )  # fmt: skip
    expected = PREDICT(
        graph_model.params, graph_model.batch_stats, example, graph_model.static_graph, cfg
    )
    assert scores.shape == (5, tiny.num_entities) and query.shape == (5, cfg.dim)
    np.testing.assert_allclose(scores, np.asarray(expected)[:5], rtol=1e-4, atol=1e-5)


def test_live_candidates_are_the_top_k_of_the_scores() -> None:
    scores = np.random.default_rng(3).normal(size=50).astype(np.float32)
    for k in (1, 4, 10, 50):
        np.testing.assert_array_equal(
            embeddings.live_candidates(scores, k), np.argsort(-scores)[:k]
        )
    with pytest.raises(ValueError):
        embeddings.live_candidates(scores, 51)


def test_live_answer_frames_have_the_declared_shapes(graph_model, tiny) -> None:
    emb = graph_model.embed(filled_window(tiny, 6))
    candidates, frames = graph_model.live(emb, 3, 1, K)
    d = tiny.cfg.dim
    assert frames.subject.shape == (T, d) and frames.relation.shape == (d,)
    assert frames.candidates.shape == (K, T, d) and frames.scores.shape == (K,)
    assert frames.query.shape == (d,)
    check_frames(frames, steps=T, dim=d)  # the shared layout accepts them
    for frame in frames:
        assert frame.dtype == np.float32 and frame.flags.c_contiguous and np.isfinite(frame).all()
    np.testing.assert_array_equal(frames.subject, emb.entities[:, 3])
    np.testing.assert_array_equal(frames.relation, emb.relations[1])
    for i, c in enumerate(candidates):
        np.testing.assert_array_equal(frames.candidates[i], emb.entities[:, c])
    scores, query = embeddings.entity_scores(graph_model, emb, np.array([3]), np.array([1]))
    np.testing.assert_array_equal(candidates, np.argsort(-scores[0])[:K])
    np.testing.assert_allclose(frames.scores, scores[0, candidates], rtol=1e-6)
    np.testing.assert_array_equal(frames.query, query[0])


@pytest.mark.parametrize(("subject", "relation"), [(3, 1), (0, 5), (9, 2)])
def test_scores_are_the_query_vector_against_the_newest_candidate_embeddings(
    graph_model, tiny, subject: int, relation: int
) -> None:
    """What the LLM is told of the query vector (shared.graph_frames): it gives the scores."""
    emb = graph_model.embed(filled_window(tiny, 7))
    _, frames = graph_model.live(emb, subject, relation, tiny.num_entities)
    newest = np.tanh(frames.candidates[:, -1].astype(np.float64))
    np.testing.assert_allclose(frames.scores, newest @ frames.query, rtol=1e-4, atol=1e-5)
    assert np.ptp(frames.scores) > 0  # not trivially equal


def mcq_questions(tiny, t: int) -> list[tuple[int, int, int, np.ndarray]]:
    """(s, r, gold, true objects of (s, r, t)) for every fact of step ``t``."""
    triples = tiny.triples_at(t)
    return [
        (s, r, o, triples[(triples[:, 0] == s) & (triples[:, 1] == r), 2])
        for s, r, o in triples.tolist()
    ]


@pytest.mark.parametrize("t", [4, 7, 10])
def test_mcq_candidates_hold_the_gold_once_and_negatives_only_from_the_three_steps_before(
    tiny, t: int
) -> None:
    win = filled_window(tiny, t)
    pool = embeddings.mcq_pool(win, t)
    facts = tiny.facts
    before = facts[(facts[:, 3] >= t - 3) & (facts[:, 3] < t)]
    np.testing.assert_array_equal(pool, np.unique(before[:, [0, 2]]))
    for s, r, gold, true_objects in mcq_questions(tiny, t):
        rng = embeddings.mcq_rng(0, t, s, r, gold)
        candidates, position = embeddings.mcq_candidates(gold, true_objects, pool, K, rng)
        assert len(candidates) == K and len(set(candidates.tolist())) == K
        assert candidates[position] == gold and (candidates == gold).sum() == 1
        negatives = np.delete(candidates, position)
        assert np.isin(negatives, pool).all()
        assert not np.isin(negatives, true_objects).any()


def test_mcq_candidates_are_deterministic_for_a_seed_and_vary_with_it(tiny) -> None:
    t = 10
    pool = embeddings.mcq_pool(filled_window(tiny, t), t)

    def draw(seed: int) -> list[tuple[list[int], int]]:
        out = []
        for s, r, gold, true_objects in mcq_questions(tiny, t):
            rng = embeddings.mcq_rng(seed, t, s, r, gold)
            candidates, position = embeddings.mcq_candidates(gold, true_objects, pool, K, rng)
            out.append((candidates.tolist(), position))
        return out

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)
    positions = {position for _, position in draw(0) + draw(1) + draw(2)}
    assert len(positions) > 1  # the gold is not always at the same letter


def test_mcq_refuses_a_pool_with_too_few_negatives() -> None:
    rng = np.random.default_rng(0)
    pool = np.array([1, 2, 3, 4])
    with pytest.raises(embeddings.PoolTooSmallError):
        embeddings.mcq_candidates(1, np.array([1, 2]), pool, 4, rng)  # only 3, 4 left
