"""The calibration math on synthetic sets whose true probabilities are known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from synthetic import table_with_temperature, with_misses

from services.calibrate.calibrators import Isotonic, Stack, Temperature, from_params
from services.calibrate.fit import ProtocolCalibration, fit_protocol, truth_with_other
from shared import prob_metrics


def test_temperature_fit_recovers_a_known_temperature() -> None:
    table, _ = table_with_temperature(4000, 10, temperature=2.5)
    fitted = Temperature().fit(table.features(), table.gold)
    assert fitted.temperature == pytest.approx(2.5, rel=0.08)
    raw = prob_metrics.softmax(table.llm)
    assert prob_metrics.nll(fitted.probabilities(table.features()), table.gold) < prob_metrics.nll(
        raw, table.gold
    )


def test_isotonic_output_is_monotone_in_confidence_and_sums_to_one() -> None:
    table, _ = table_with_temperature(3000, 6, temperature=3.0, seed=2)
    features = table.features()
    p = Isotonic().fit(features, table.gold).probabilities(features)
    assert np.allclose(p.sum(axis=1), 1.0) and (p >= 0).all()
    fitted = Isotonic().fit(features, table.gold)
    grid = fitted.top_confidence(np.linspace(0, 1, 501))
    assert (np.diff(grid) >= 0).all() and grid[-1] > grid[0]
    # the top pick stays the top pick, and the others keep their softmax proportions
    assert (p.argmax(axis=1) == table.llm.argmax(axis=1)).all()
    raw = prob_metrics.softmax(table.llm)
    ratio = p[:, :2] / raw[:, :2]
    others = ~np.isin(np.arange(len(p)), np.flatnonzero(table.llm.argmax(1) < 2))
    assert np.allclose(ratio[others, 0], ratio[others, 1])


def test_ece_of_a_perfectly_calibrated_set_is_near_zero_and_of_an_overconfident_one_is_not() -> (
    None
):
    table, true = table_with_temperature(20000, 10, temperature=1.0, seed=3)
    assert prob_metrics.ece(true, table.gold) < 0.015
    sharp = prob_metrics.softmax(table.llm * 3.0)
    assert prob_metrics.ece(sharp, table.gold) > 0.1


def test_the_ece_floor_is_what_a_perfectly_calibrated_forecast_shows_on_that_many_questions() -> (
    None
):
    """The floor shrinks like 1/sqrt(n), and a calibrated set's measured ECE falls near it."""
    small, true_small = table_with_temperature(500, 10, temperature=1.0, seed=5)
    large, _ = table_with_temperature(8000, 10, temperature=1.0, seed=6)
    floor_small, p95_small = prob_metrics.ece_floor(true_small)
    floor_large, _ = prob_metrics.ece_floor(prob_metrics.softmax(large.llm))
    assert floor_small > 2.5 * floor_large > 0  # sqrt(16) = 4 fewer, by sampling alone
    assert floor_small < p95_small
    above = 0  # a calibrated set's own ECE passes the 95th percentile about one time in 20
    for seed in range(20):
        table, true = table_with_temperature(300, 10, temperature=1.0, seed=100 + seed)
        above += prob_metrics.ece(true, table.gold) > prob_metrics.ece_floor(true, seed=seed)[1]
    assert above <= 4
    assert prob_metrics.ece(prob_metrics.softmax(small.llm * 3.0), small.gold) > 2 * p95_small
    confident = np.tile([[1.0, 0.0]], (100, 1))  # a sure forecast has no sampling noise
    assert prob_metrics.ece_floor(confident) == (0.0, 0.0)


def test_brier_and_nll_of_hand_made_forecasts() -> None:
    probs = np.array([[0.5, 0.5], [1.0, 0.0]])
    truth = np.array([0, 1])
    assert prob_metrics.brier(probs, truth) == pytest.approx((0.5 + 2.0) / 2)
    assert prob_metrics.nll(probs[:1], truth[:1]) == pytest.approx(np.log(2))
    assert prob_metrics.accuracy(probs, truth) == 0.5
    with pytest.raises(ValueError, match="outside"):
        prob_metrics.brier(probs, np.array([0, 2]))


def test_stack_leans_on_the_better_input() -> None:
    table, true = table_with_temperature(3000, 10, temperature=1.0, seed=4)
    # make the llm column noise, the graph column the true logits: stack must find the graph
    noisy = table.subset(np.ones(len(table), bool))
    object.__setattr__(noisy, "llm", np.random.default_rng(5).normal(size=table.llm.shape))
    stack = Stack().fit(noisy.features(), noisy.gold)
    graph_weight, llm_weight = abs(stack.weights[1]), abs(stack.weights[0])
    assert graph_weight > 5 * llm_weight
    p = stack.probabilities(noisy.features())
    assert prob_metrics.nll(p, noisy.gold) < prob_metrics.nll(
        Temperature().fit(noisy.features(), noisy.gold).probabilities(noisy.features()),
        noisy.gold,
    )


def test_other_is_calibrated_on_a_set_with_a_known_miss_rate() -> None:
    table, _ = table_with_temperature(8000, 10, temperature=1.5, seed=6)
    # misses are likelier when the graph's best candidate is weak: a learnable known rate
    top = np.sort(table.graph, axis=1)[:, -1]
    rate = 1.0 / (1.0 + np.exp(top - np.median(top)))
    live = with_misses(table, rate)
    fit = fit_protocol(live.subset(np.arange(len(live)) < 6000))
    test = live.subset(np.arange(len(live)) >= 6000)
    p = fit.forecast(test.features())
    assert p.shape == (2000, 11) and np.allclose(p.sum(axis=1), 1.0)
    other, missed = p[:, -1], test.gold < 0
    assert other.mean() == pytest.approx(missed.mean(), abs=0.03)
    # calibrated by bins: where we say 70 % miss, about 70 % are misses
    bins = np.digitize(other, [0.25, 0.5, 0.75])
    for b in np.unique(bins):
        chosen = bins == b
        if chosen.sum() > 100:
            assert missed[chosen].mean() == pytest.approx(other[chosen].mean(), abs=0.08)
    assert prob_metrics.ece(p, truth_with_other(test)) < 0.05


def test_a_yardstick_reads_its_own_column_only_and_round_trips() -> None:
    table, _ = table_with_temperature(1500, 6, temperature=1.5, seed=8)
    table = replace(table, recurrency=table.llm / 1.5)  # the baseline knows the truth too
    fit = fit_protocol(with_misses(table, np.full(len(table), 0.25)), yardsticks=("recurrency",))
    baseline = fit.yardsticks["recurrency"]
    assert set(baseline.calibrators) == {"temperature", "isotonic"} and baseline.other is not None
    assert baseline.calibrators["temperature"].temperature == pytest.approx(1.0, abs=0.15)
    features = table.features()
    shuffled = features.copy()
    shuffled[..., 0] = np.random.default_rng(0).permutation(shuffled[..., 0])  # llm scores
    assert np.allclose(baseline.in_set(features), baseline.in_set(shuffled))
    again = ProtocolCalibration.from_params(fit.params())
    assert np.allclose(
        again.yardsticks["recurrency"].forecast(features), baseline.forecast(features)
    )
    assert fit_protocol(table).yardsticks == {}  # only where asked for


def test_a_fit_round_trips_through_json_params() -> None:
    table, _ = table_with_temperature(600, 4, temperature=2.0, seed=7)
    fit = fit_protocol(with_misses(table, np.full(len(table), 0.3)))
    again = ProtocolCalibration.from_params(fit.params())
    assert again.chosen == fit.chosen and set(again.cv_nll) == {"temperature", "isotonic", "stack"}
    assert np.allclose(again.forecast(table.features()), fit.forecast(table.features()))
    with pytest.raises(ValueError, match="not one of"):
        from_params("platt", {})
