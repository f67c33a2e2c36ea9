"""The recent window: what it keeps, how it pads, and that a rebuild from the store is exact."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from services.graph.history import MCQ_LOOKBACK, RecentWindow


def window(tiny, history: int = 2, steps: int = 3) -> RecentWindow:
    return RecentWindow(tiny.num_entities, tiny.num_relations, history, steps)


def test_keeps_the_last_k_plus_t_minus_one_snapshots_and_moves_the_horizon(tiny) -> None:
    win = window(tiny, history=3, steps=2)
    assert win.capacity == 4
    versions = []
    for t in range(7):
        win.advance(t, tiny.triples_at(t))
        versions.append(win.version)
    assert win.snapshot_steps == [3, 4, 5, 6]
    assert (win.horizon, win.last_step) == (6, 6)
    assert versions == sorted(set(versions))  # every change is a new version


def test_capacity_covers_the_mcq_lookback_even_for_short_histories(tiny) -> None:
    assert window(tiny, history=1, steps=1).capacity == MCQ_LOOKBACK


def test_an_empty_step_moves_the_horizon_but_adds_no_snapshot(tiny) -> None:
    win = window(tiny)
    win.advance(0, tiny.triples_at(0))
    win.advance(1, np.zeros((0, 3), dtype=np.int64))
    assert (win.horizon, win.last_step, win.snapshot_steps) == (1, 0, [0])


def test_a_step_at_or_before_the_horizon_is_refused(tiny) -> None:
    win = window(tiny)
    win.advance(4, tiny.triples_at(4))
    with pytest.raises(ValueError, match="horizon"):
        win.advance(4, tiny.triples_at(4))


def test_facts_outside_the_model_vocabulary_are_dropped(tiny) -> None:
    win = window(tiny)
    n, r = tiny.num_entities, tiny.num_relations
    win.advance(0, np.array([[0, 1, 2], [n, 0, 1], [1, r, 2]]))
    assert win.seen_entities(0, 0).tolist() == [0, 2]


def test_histories_stack_t_slots_of_k_snapshots_with_empty_leading_slots(tiny) -> None:
    win = window(tiny, history=2, steps=3)
    win.advance(0, tiny.triples_at(0))
    win.advance(1, tiny.triples_at(1))
    hist = win.histories()
    # slot j ends T-1-j snapshots before the newest: [], [s0], [s0, s1]
    assert hist.present.tolist() == [[False, False], [False, True], [True, True]]
    size = hist.graph.senders.shape[-1]
    assert hist.graph.senders.shape == (3, 2, size)
    assert hist.pair_entity.shape == (3, 2, 2 * size)
    s, _, o = tiny.triples_at(1).T
    # the newest slot's last snapshot is step 1: edges s -> o first, then the inverses
    np.testing.assert_array_equal(hist.graph.senders[2, 1, : len(s)], s)
    np.testing.assert_array_equal(hist.graph.receivers[2, 1, : len(s)], o)
    np.testing.assert_array_equal(hist.graph.senders[2, 1, len(s) : 2 * len(s)], o)
    assert (hist.graph.senders[2, 1, 2 * len(s) :] == tiny.num_entities).all()  # padding node


def test_seen_entities_covers_only_the_asked_steps(tiny) -> None:
    win = window(tiny)
    for t in range(5):
        win.advance(t, tiny.triples_at(t))
    facts = tiny.facts
    expected = np.unique(facts[(facts[:, 3] >= 2) & (facts[:, 3] <= 3)][:, [0, 2]])
    np.testing.assert_array_equal(win.seen_entities(2, 3), expected)
    assert win.seen_entities(7, 9).size == 0


def test_rebuild_from_a_real_store_equals_advancing_step_by_step(tmp_path: Path, tiny) -> None:
    store = tiny.open_store(tmp_path / "store")
    tiny.append_steps(store, range(9))  # the store runs ahead of the rebuild point
    walked = window(tiny)
    for t in range(6):
        walked.advance(t, tiny.triples_at(t))
    rebuilt = window(tiny)
    rebuilt.rebuild(store, before=6)
    assert rebuilt.horizon == 5
    assert rebuilt.snapshot_steps == walked.snapshot_steps == [2, 3, 4, 5]
    for a, b in zip(
        jax.tree.leaves(rebuilt.histories()), jax.tree.leaves(walked.histories()), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_fresh_is_an_empty_window_of_the_same_shape(tiny) -> None:
    win = window(tiny, history=3, steps=2)
    win.advance(0, tiny.triples_at(0))
    empty = win.fresh()
    assert (empty.capacity, empty.horizon, empty.snapshot_steps) == (win.capacity, None, [])
