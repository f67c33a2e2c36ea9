"""Ranking metrics and query building, on toys where every rank is known by hand."""

from __future__ import annotations

from fractions import Fraction
from itertools import permutations

import numpy as np
import pytest

from services.graph.queries import (
    expand_ranges,
    iter_step_queries,
    step_queries,
    with_inverse,
)
from services.graph.ranking import (
    RankCounts,
    count_ranks,
    hits,
    reciprocal_rank,
    summarise,
)

# ---------------------------------------------------------------------------- metrics


def test_raw_and_filtered_counts_with_ties():
    scores = np.array(
        [
            [0.9, 0.5, 0.5, 0.1, 0.5],  # gold 1: one above (0), ties with 2 and 4
            [0.2, 0.1, 0.3, 0.3, 0.0],  # gold 0: 2 and 3 above, no tie
            [0.0, 0.0, 0.0, 0.0, 0.0],  # gold 4: everything tied
        ]
    )
    gold = np.array([1, 0, 4])
    # other true objects: query 0 -> {0, 2}; query 1 -> {3}; query 2 -> {0, 1}
    rows, cols = np.array([0, 0, 1, 2, 2]), np.array([0, 2, 3, 0, 1])
    raw, filtered = count_ranks(scores, gold, rows, cols)
    assert raw.above.tolist() == [1, 2, 0] and raw.tied.tolist() == [2, 0, 4]
    assert filtered.above.tolist() == [0, 1, 0] and filtered.tied.tolist() == [1, 0, 2]


def test_expected_reciprocal_rank_and_hits_by_hand():
    counts = RankCounts(np.array([1, 0, 2, 0]), np.array([2, 1, 0, 0]))
    # ranks uniform on {2,3,4}; {1,2}; {3}; {1}
    expected_rr = [
        (1 / 2 + 1 / 3 + 1 / 4) / 3,
        (1 + 1 / 2) / 2,
        1 / 3,
        1.0,
    ]
    np.testing.assert_allclose(reciprocal_rank(counts), expected_rr)
    np.testing.assert_allclose(hits(counts, 1), [0, 0.5, 0, 1])
    np.testing.assert_allclose(hits(counts, 3), [2 / 3, 1, 1, 1])
    np.testing.assert_allclose(hits(counts, 10), [1, 1, 1, 1])


@pytest.mark.parametrize(("above", "tied"), [(0, 3), (2, 2), (5, 0), (1, 4)])
def test_expectation_equals_average_over_all_tie_orders(above: int, tied: int):
    """The closed form is the mean over every order of the tied block (random tie breaking)."""
    block = ["gold", *range(tied)]
    orders = list(permutations(block))
    ranks = [above + 1 + order.index("gold") for order in orders]
    mean_rr = sum(Fraction(1, r) for r in ranks) / len(orders)
    counts = RankCounts(np.array([above]), np.array([tied]))
    assert reciprocal_rank(counts)[0] == pytest.approx(float(mean_rr))
    for k in (1, 3, 10):
        share = Fraction(sum(r <= k for r in ranks), len(orders))
        assert hits(counts, k)[0] == pytest.approx(float(share))


def test_summarise_reports_fractions_and_query_count():
    counts = RankCounts(np.array([0, 1]), np.array([0, 0]))
    metrics = summarise(counts)
    assert metrics == pytest.approx(
        {"mrr": 0.75, "hits@1": 0.5, "hits@3": 1.0, "hits@10": 1.0, "n_queries": 2}
    )
    with pytest.raises(ValueError, match="no queries"):
        summarise(RankCounts.concat([]))


def test_nan_scores_are_refused():
    scores = np.array([[0.1, np.nan, 0.3]])
    with pytest.raises(ValueError, match="NaN"):
        count_ranks(scores, np.array([0]), np.array([], int), np.array([], int))


# ---------------------------------------------------------------------------- queries


def test_inverse_queries_swap_subject_and_object_and_shift_relation():
    facts = np.array([[0, 1, 2, 5], [3, 0, 4, 6]])
    quads = with_inverse(facts, num_relations=3)
    assert quads.tolist() == [[0, 1, 2, 5], [3, 0, 4, 6], [2, 4, 0, 5], [4, 3, 3, 6]]


def test_time_aware_filter_holds_only_other_objects_of_same_subject_relation_step():
    # step 7, R = 1: (0,0,1), (0,0,2), (3,0,1); a fact at another step must not filter.
    facts = np.array([[0, 0, 1, 7], [0, 0, 2, 7], [3, 0, 1, 7], [0, 0, 3, 8]])
    steps = list(iter_step_queries(facts, num_relations=1))
    assert [q.t for q in steps] == [7, 8]
    q = steps[0]
    queries = list(zip(q.subject.tolist(), q.relation.tolist(), q.gold.tolist(), strict=True))
    assert queries == [(0, 0, 1), (0, 0, 2), (3, 0, 1), (1, 1, 0), (2, 1, 0), (1, 1, 3)]
    filtered = sorted(zip(q.filter_rows.tolist(), q.filter_cols.tolist(), strict=True))
    # (0,0,?) gold 1 filters 2 and vice versa; (1,1,?) gold 0 filters 3 and vice versa
    assert filtered == [(0, 2), (1, 1), (3, 3), (5, 0)]
    assert steps[1].filter_rows.size == 0


def test_filter_end_to_end_raises_rank_only_by_other_true_objects():
    # one step: (0,0,1) and (0,0,2) true; the scorer likes 2 > 1 > 3 > 0 for subject 0.
    q = step_queries(with_inverse(np.array([[0, 0, 1, 4], [0, 0, 2, 4]]), 1), 2)
    scores = np.zeros((len(q), 4))
    scores[:2] = [0.0, 0.5, 0.9, 0.2]
    raw, filtered = count_ranks(scores, q.gold, q.filter_rows, q.filter_cols)
    assert raw.above[:2].tolist() == [1, 0]  # gold 1 is behind 2 when 2 is not filtered
    assert filtered.above[:2].tolist() == [0, 0]


def test_step_queries_refuses_mixed_steps():
    with pytest.raises(ValueError, match="one time step"):
        step_queries(np.array([[0, 0, 1, 1], [0, 0, 1, 2]]), 2)


def test_expand_ranges():
    owner, index = expand_ranges(np.array([2, 5, 0]), np.array([4, 5, 1]))
    assert owner.tolist() == [0, 0, 2] and index.tolist() == [2, 3, 0]
