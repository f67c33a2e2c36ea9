"""Frequency and recurrency baselines, their tuning, the CLI and the eval report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.graph.baselines import (
    ALPHAS,
    LAMBDAS,
    METHODS,
    Benchmark,
    History,
    StepScores,
    evaluate,
    main,
    select_per_relation,
    tune_recurrency,
)
from services.graph.queries import step_queries, with_inverse
from shared import eval_report
from shared.tkg_dataset import load_tkg

# ------------------------------------------------------------------ hand-computed scores

# R = 1, entities 0..3. History: (0,0,1) at t=0 and t=1, (0,0,2) and (3,0,2) at t=2.
HISTORY = np.array([[0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 2, 2], [3, 0, 2, 2]])
QUERY_T = 3


def _scores_at_query_step() -> StepScores:
    quads = with_inverse(np.vstack([HISTORY, [[0, 0, 1, QUERY_T]]]), 1)
    history = History(quads, num_entities=4, num_relations=1, lambdas=[0.0, 1.0])
    history.advance_to(QUERY_T)
    return StepScores(history, step_queries(quads[quads[:, 3] == QUERY_T], 2))


def test_frequency_counts_past_triples_and_breaks_ties_by_relation_share():
    scores = _scores_at_query_step().frequency()
    # object query (0,0,?): counts 2 (o=1), 1 (o=2); xi of relation 0: 1 -> 2/4, 2 -> 2/4
    np.testing.assert_allclose(scores[0], [0.0, 2.25, 1.25, 0.0])
    # inverse query (1,1,?): (1,1,0) twice; xi of relation 1: 0 -> 3/4, 3 -> 1/4
    np.testing.assert_allclose(scores[1], [2 + 0.5 * 0.75, 0.0, 0.0, 0.5 * 0.25])


def test_strict_recurrency_decays_with_age_and_normalises_over_past_steps():
    scores = _scores_at_query_step()
    # lambda = 0: occurrences / 3 past steps (t = 0, 1, 2)
    np.testing.assert_allclose(scores.strict(np.array([0, 0]))[0], [0, 2 / 3, 1 / 3, 0])
    # lambda = 1: weights 1/8, 1/4, 1/2 for ages 3, 2, 1; denominator 7/8
    np.testing.assert_allclose(scores.strict(np.array([1, 1]))[0], [0, 3 / 7, 4 / 7, 0])


def test_relaxed_and_combined_recurrency():
    scores = _scores_at_query_step()
    np.testing.assert_allclose(scores.relaxed, [[0, 0.5, 0.5, 0], [0.75, 0, 0, 0.25]])
    combined = scores.combined(np.array([1, 1]), np.array([0.5, 0.5]))
    np.testing.assert_allclose(
        combined[0], 0.5 * np.array([0, 3 / 7, 4 / 7, 0]) + [0, 0.25, 0.25, 0]
    )


# ------------------------------------------------------------------ selection on valid

# R = 2. Relation 0, subject 0: object 1 at t = 0, 1, 2, object 2 at t = 3, 4, and the valid
# fact (0, 0, 2) at t = 5: the recent object returns. Relation 1 appears only in train.
TOY_SPLITS = {
    "train": np.array(
        [[0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 2], [0, 0, 2, 3], [0, 0, 2, 4], [1, 1, 0, 0]]
    ),
    "valid": np.array([[0, 0, 2, 5]]),
    "test": np.array([[0, 0, 2, 6]]),
}


def _toy() -> Benchmark:
    return Benchmark("toy", num_entities=3, num_relations=2, splits=TOY_SPLITS)


def test_lambda_and_alpha_selection_pick_the_known_best():
    params = tune_recurrency(_toy())
    # psi ranks object 2 above object 1 when 2^-l + 2^-2l > 2^-3l + 2^-4l + 2^-5l, i.e.
    # lambda > ~0.243: the first grid value is 0.5. The inverse query (2, 2, ?) -> 0 is ranked
    # first by every lambda, relations 1 and 3 have no valid query: all take the pooled best.
    assert params.lambda_index.tolist() == [LAMBDAS.index(0.5)] * 4
    # with lambda = 0.5: psi(2) - psi(1) = 0.2147, xi(1) - xi(2) = 3/5 - 2/5 = 0.2, so alpha
    # must exceed 0.2 / 0.4147 = 0.482: the first grid value is 0.5.
    assert params.alpha_index.tolist() == [ALPHAS.index(0.5)] * 4


def test_select_per_relation_breaks_ties_by_pooled_mrr():
    rr = np.array(
        [
            [0.2, 0.2, 1.0, 1.0, 0.5],  # config 0
            [0.5, 0.5, 1.0, 0.2, 0.5],  # config 1
            [0.4, 0.4, 1.0, 1.0, 0.9],  # config 2: best pooled
        ]
    )
    relation = np.array([0, 0, 1, 1, 2])
    # relation 0 -> config 1; relation 1 -> configs 0 and 2 tie, pooled picks 2;
    # relation 2 -> config 2; relation 3 has no query -> pooled best, config 2
    assert select_per_relation(rr, relation, 4).tolist() == [1, 2, 2, 2]


def test_evaluate_test_split_by_hand():
    bench = _toy()
    results = evaluate(bench, tune_recurrency(bench))
    assert list(results) == list(METHODS)
    frequency = results["frequency"]["time-aware"]
    # (0,0,?) at t=6: objects 1 and 2 both seen 3 times and both 3/6 of relation 0: a tie,
    # expected RR (1 + 1/2) / 2; inverse (2,2,?) -> 0 seen 3 times: rank 1.
    assert frequency["mrr"] == pytest.approx((0.75 + 1.0) / 2)
    assert frequency["hits@1"] == pytest.approx(0.75)
    assert frequency["n_queries"] == 2
    assert results["recurrency"]["time-aware"]["mrr"] == pytest.approx(1.0)


# ------------------------------------------------------------------ CLI and report


def _write_benchmark(directory: Path) -> None:
    directory.mkdir()
    for split, facts in TOY_SPLITS.items():
        lines = "".join("\t".join(map(str, row)) + "\n" for row in facts)
        (directory / f"{split}.txt").write_text(lines)
    (directory / "stat.txt").write_text("3\t2")


def test_cli_writes_every_method_in_both_filters(tmp_path: Path, capsys):
    data, reports = tmp_path / "TOY", tmp_path / "reports"
    _write_benchmark(data)
    (reports).mkdir()
    (reports / "eval.json").write_text(json.dumps({"TOY": {"tgl-mcq": {"K4": {}}}, "SIM": {}}))
    assert main(["--data", str(data), "--reports", str(reports)]) == 0
    report = json.loads((reports / "eval.json").read_text())
    assert report["TOY"]["tgl-mcq"] == {"K4": {}} and "SIM" in report
    ranking = report["TOY"]["ranking"]
    assert sorted(ranking) == sorted([*METHODS, *(m + "@raw" for m in METHODS)])
    assert ranking["recurrency"]["filter"] == "time-aware"
    assert ranking["recurrency@raw"]["filter"] == "raw"
    assert ranking["recurrency"]["n_queries"] == 2
    markdown = (reports / "eval.md").read_text()
    assert f"geopol eval-baselines --data {data} --reports {reports}" in markdown
    assert "recurrency@raw" in markdown
    assert "recurrency" in capsys.readouterr().out


def test_write_ranking_refuses_inconsistent_entries(tmp_path: Path):
    path = tmp_path / "eval.json"
    good = {"mrr": 0.5, "hits@1": 0.4, "hits@3": 0.5, "hits@10": 0.6, "n_queries": 3}
    with pytest.raises(ValueError, match="cannot hold"):
        eval_report.write_ranking("D", "regcn", {**good, "filter": "raw"}, path)
    with pytest.raises(ValueError, match="fraction"):
        eval_report.write_ranking("D", "regcn", {**good, "mrr": 42.1, "filter": "time-aware"}, path)
    assert not path.exists()
    eval_report.write_ranking("D", "regcn@raw", {**good, "filter": "raw"}, path, command="x")
    assert json.loads(path.read_text())["D"]["ranking"]["regcn@raw"]["hits@10"] == 0.6


@pytest.mark.slow
def test_icews14_recurrency_matches_published(shared_data: Path):
    """Gastinger et al. 2024 report time-aware filtered MRR 0.372 (combined), 0.363 (strict)."""
    bench = Benchmark.from_dataset(load_tkg(shared_data / "tkg" / "ICEWS14"))
    results = evaluate(bench, tune_recurrency(bench))
    assert results["recurrency"]["time-aware"]["mrr"] == pytest.approx(0.372, abs=0.01)
    assert results["recurrency-strict"]["time-aware"]["mrr"] == pytest.approx(0.363, abs=0.01)
    assert results["recurrency"]["time-aware"]["n_queries"] == 2 * 7371
