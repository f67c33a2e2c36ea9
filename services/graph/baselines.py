"""Rule-free baselines for the ``ranking`` protocol: frequency and recurrency.

Both are scored with the same queries (object + inverse, ``queries.py``) and the same ranking
code (``ranking.py``) as every learned model, single-step: the history of a query at step ``t``
is every fact before ``t`` (train, valid and the earlier test steps).

``frequency``
    score(o | s, r, t) = number of past facts ``(s, r, o)`` + 0.5 * xi(o | r, t). The second
    term (below 1, so it never reorders different counts) only orders objects with equal
    counts, most of all the never-seen ones, by how often they were the object of ``r``.

``recurrency`` (Gastinger et al., IJCAI 2024, "History repeats itself"; definitions checked
against nec-research/recurrency_baseline_tkg)
    strict psi(o | s, r, t) = sum over past facts (s, r, o, t') of 2^(-lambda (t - t'))
                              / sum over steps t'' = t0(r) .. t-1 of 2^(-lambda (t - t''))
        every past occurrence counts, discounted by its age; the denominator (t0(r): first step
        relation r was seen) makes psi the decayed fraction of past steps at which the fact held,
        so it lies in [0, 1] and can be mixed with xi. (The reference sums up to the last step
        with a fact of ``r``, excluded; in daily ICEWS data that is one step less, which only
        rescales psi against xi, and alpha is tuned on top of it.)
    relaxed xi(o | r, t) = share of past facts with relation r whose object is o (the subject is
        ignored: it fills in when (s, r) has no history).
    combined = alpha psi + (1 - alpha) xi.
    lambda is chosen per relation (inverse relations separately) on the validation split for
    psi alone; then alpha per relation with that lambda, both on time-aware filtered MRR (the
    paper's grids; alpha = 1 is left out because it is strict recurrency, reported on its own).
    Where a relation's validation queries cannot tell values apart (exact ties; always so for a
    relation without validation queries) the value best over the whole validation split
    decides, then grid order. The reference takes the first of the grid instead, and
    lambda = 1.0001, alpha = 0.99999 for relations without validation queries; on ICEWS14 that
    gives 0.3731 / 0.3615 (combined / strict) against our 0.3749 / 0.3617.
    Reported as ``recurrency-strict`` (psi with its lambdas), ``recurrency`` (the combination)
    and ``recurrency-relaxed`` (xi alone).

Run as ``geopol eval-baselines --data DIR``: tunes on valid, evaluates test, writes
reports/eval.json and reports/eval.md (see ``eval_report``) and prints a table.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from services.graph.queries import StepQueries, expand_ranges, iter_step_queries, with_inverse
from services.graph.ranking import RankCounts, count_ranks, reciprocal_rank, summarise
from shared import eval_report
from shared.tkg_dataset import TkgDataset, load_tkg

LAMBDAS = (0.0, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.5, 0.9, 1.0001)
ALPHAS = (0.0, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999)
FREQUENCY_TIE_WEIGHT = 0.5
METHODS = ("frequency", "recurrency-relaxed", "recurrency-strict", "recurrency")


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's facts with ``t`` as a step index (ICEWS hours / 24 -> days)."""

    name: str
    num_entities: int
    num_relations: int
    splits: dict[str, np.ndarray]

    @classmethod
    def from_dataset(cls, dataset: TkgDataset, name: str | None = None) -> Benchmark:
        splits = {}
        for split, facts in dataset.splits.items():
            facts = facts.copy()
            facts[:, 3] //= dataset.time_step
            splits[split] = facts
        return cls(name or dataset.name, dataset.num_entities, dataset.num_relations, splits)


class History:
    """What the baselines know of the past: every fact before the step asked for.

    Per distinct triple ``(s, r, o)`` (inverse relations included) it keeps the number of past
    occurrences and, for every lambda of the grid, the decayed sum ``sum 2^(-lambda (t_last - t'))``
    as of its last occurrence ``t_last``; reading it at ``t`` multiplies by
    ``2^(-lambda (t - t_last))``. Adding a step touches only that step's triples, so the cost of a
    step does not grow with the length of the history.
    """

    def __init__(
        self, quads: np.ndarray, num_entities: int, num_relations: int, lambdas: Iterable[float]
    ) -> None:
        """``quads``: all facts of the benchmark, inverse ones included, in any order."""
        self.num_entities = num_entities
        self.num_relations_total = 2 * num_relations
        quads = quads[np.argsort(quads[:, 3], kind="stable")]
        self._steps = np.split(quads, np.flatnonzero(np.diff(quads[:, 3])) + 1)
        self._added = 0
        triples = np.unique(quads[:, :3], axis=0)
        self._pair_key = triples[:, 0] * self.num_relations_total + triples[:, 1]
        self._triple_key = self._pair_key * num_entities + triples[:, 2]
        self._object = triples[:, 2]
        self.lambdas = np.asarray(tuple(lambdas), dtype=np.float64)
        self._count = np.zeros(len(triples), dtype=np.int64)
        self._decayed = np.zeros((len(self.lambdas), len(triples)))
        self._last = np.zeros(len(triples), dtype=np.int64)
        self._object_count = np.zeros((self.num_relations_total, num_entities))
        self._relation_count = np.zeros(self.num_relations_total)
        self._first_step = np.full(self.num_relations_total, -1, dtype=np.int64)

    def advance_to(self, t: int) -> None:
        """Take in every step before ``t`` (steps are taken in once, in time order)."""
        while self._added < len(self._steps) and self._steps[self._added][0, 3] < t:
            step = self._steps[self._added]
            self._add_step(step, int(step[0, 3]))
            self._added += 1

    def _add_step(self, quads: np.ndarray, t: int) -> None:
        pair = quads[:, 0] * self.num_relations_total + quads[:, 1]
        key = pair * self.num_entities + quads[:, 2]
        index, n = np.unique(np.searchsorted(self._triple_key, key), return_counts=True)
        decay = np.exp2(-self.lambdas[:, None] * (t - self._last[index])[None, :])
        self._decayed[:, index] = self._decayed[:, index] * decay + n
        self._last[index] = t
        self._count[index] += n
        np.add.at(self._object_count, (quads[:, 1], quads[:, 2]), 1.0)
        self._relation_count += np.bincount(quads[:, 1], minlength=self.num_relations_total)
        new = np.unique(quads[:, 1])
        new = new[self._first_step[new] < 0]
        self._first_step[new] = t

    def seen(self, subject: np.ndarray, relation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query row, triple index) for every triple of each query's (s, r) seen so far."""
        pair = subject * self.num_relations_total + relation
        lo = np.searchsorted(self._pair_key, pair, side="left")
        hi = np.searchsorted(self._pair_key, pair, side="right")
        rows, triple = expand_ranges(lo, hi)
        keep = self._count[triple] > 0
        return rows[keep], triple[keep]

    def objects(self, triple: np.ndarray) -> np.ndarray:
        return self._object[triple]

    def counts(self, triple: np.ndarray) -> np.ndarray:
        return self._count[triple]

    def strict(
        self, triple: np.ndarray, relation: np.ndarray, lambda_index: np.ndarray, t: int
    ) -> np.ndarray:
        """psi of each (triple, its query's relation) with that query's lambda (module doc)."""
        lam = self.lambdas[lambda_index]
        numerator = self._decayed[lambda_index, triple] * np.exp2(-lam * (t - self._last[triple]))
        return numerator / _decayed_steps(lam, t - self._first_step[relation])

    def relaxed(self, relation: np.ndarray) -> np.ndarray:
        """xi rows ``[n, num_entities]``: object shares of each relation so far."""
        total = np.maximum(self._relation_count[relation], 1.0)
        return self._object_count[relation] / total[:, None]


def _decayed_steps(lam: np.ndarray, n_steps: np.ndarray) -> np.ndarray:
    """sum_{k=1..n} 2^(-lam k): the psi denominator over the n steps before t (n >= 1 here)."""
    ratio = np.exp2(-lam)
    geometric = ratio * -np.expm1(n_steps * np.log(ratio)) / np.where(lam > 0, 1 - ratio, 1.0)
    return np.where(lam > 0, geometric, n_steps.astype(np.float64))


class StepScores:
    """The baselines' dense score matrices for one step's queries, from the history before it."""

    def __init__(self, history: History, queries: StepQueries) -> None:
        self.history = history
        self.queries = queries
        self._rows, self._triple = history.seen(queries.subject, queries.relation)
        self._columns = history.objects(self._triple)

    def _scatter(self, values: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        scores = np.zeros((len(self.queries), self.history.num_entities)) if base is None else base
        scores[self._rows, self._columns] += values
        return scores

    @cached_property
    def relaxed(self) -> np.ndarray:
        return self.history.relaxed(self.queries.relation)

    def frequency(self) -> np.ndarray:
        counts = self.history.counts(self._triple).astype(np.float64)
        return self._scatter(counts, FREQUENCY_TIE_WEIGHT * self.relaxed)

    def strict(self, lambda_index: np.ndarray) -> np.ndarray:
        """psi with ``lambda_index[i]`` (into the grid) for query ``i``."""
        return self._scatter(self._strict_values(lambda_index))

    def combined(self, lambda_index: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """alpha psi + (1 - alpha) xi with per-query lambda index and alpha."""
        psi = alpha[self._rows] * self._strict_values(lambda_index)
        return self._scatter(psi, (1.0 - alpha)[:, None] * self.relaxed)

    def _strict_values(self, lambda_index: np.ndarray) -> np.ndarray:
        relation = self.queries.relation[self._rows]
        return self.history.strict(self._triple, relation, lambda_index[self._rows], self.queries.t)


Variants = Callable[[StepScores], Iterable[np.ndarray]]


@dataclass(frozen=True)
class SweepResult:
    """Raw and filtered rank counts per variant, and the relation of every query (in order)."""

    raw: list[RankCounts]
    filtered: list[RankCounts]
    relation: np.ndarray


def full_history(bench: Benchmark) -> History:
    """The history of every fact of the benchmark (inverse ones included), none taken in yet."""
    facts = with_inverse(np.concatenate(list(bench.splits.values())), bench.num_relations)
    return History(facts, bench.num_entities, bench.num_relations, LAMBDAS)


def sweep(bench: Benchmark, split: str, variants: Variants) -> SweepResult:
    """Score every query of ``split`` with each variant, its history being all facts before it."""
    _require_own_steps(bench, split)
    history = full_history(bench)
    raw: list[list[RankCounts]] = []
    filtered: list[list[RankCounts]] = []
    relations = []
    for queries in iter_step_queries(bench.splits[split], bench.num_relations):
        history.advance_to(queries.t)
        relations.append(queries.relation)
        _rank_variants(StepScores(history, queries), variants, raw, filtered)
    return SweepResult(
        [RankCounts.concat(parts) for parts in raw],
        [RankCounts.concat(parts) for parts in filtered],
        np.concatenate(relations),
    )


def _require_own_steps(bench: Benchmark, split: str) -> None:
    """``split`` must be non-empty and share no time step with another split (RE-Net layout).

    The time-aware filter of a step is built from the split's own facts, so a step shared with
    another split would miss true objects.
    """
    steps = np.unique(bench.splits[split][:, 3])
    if len(steps) == 0:
        raise ValueError(f"{bench.name}: split {split!r} is empty")
    for other, facts in bench.splits.items():
        if other != split and np.isin(facts[:, 3], steps).any():
            raise ValueError(f"{bench.name}: splits {split!r} and {other!r} share time steps")


def _rank_variants(
    scores: StepScores,
    variants: Variants,
    raw: list[list[RankCounts]],
    filtered: list[list[RankCounts]],
) -> None:
    queries = scores.queries
    for i, matrix in enumerate(variants(scores)):
        if i == len(raw):
            raw.append([])
            filtered.append([])
        step_raw, step_filtered = count_ranks(
            matrix, queries.gold, queries.filter_rows, queries.filter_cols
        )
        raw[i].append(step_raw)
        filtered[i].append(step_filtered)


def select_per_relation(
    reciprocal_ranks: np.ndarray, relation: np.ndarray, num_relations_total: int
) -> np.ndarray:
    """Index of the best configuration per relation (rows of ``reciprocal_ranks`` [configs, n]).

    Best = highest mean reciprocal rank over the relation's queries. Configurations that the
    relation cannot tell apart (exact ties, e.g. one query ranked first by all of them, or no
    query at all) are decided by the mean over all queries, then by grid order: taking the
    first of the grid would give such relations lambda = 0 or alpha = 0 (pure xi) by accident.
    """
    per_relation = np.stack(
        [np.bincount(relation, rr, minlength=num_relations_total) for rr in reciprocal_ranks]
    )
    pooled = reciprocal_ranks.mean(axis=1)
    tied_best = per_relation == per_relation.max(axis=0)
    return np.argmax(np.where(tied_best, pooled[:, None], -np.inf), axis=0)


@dataclass(frozen=True)
class RecurrencyParams:
    """Per relation (inverse ones included) the chosen index into LAMBDAS and into ALPHAS."""

    lambda_index: np.ndarray
    alpha_index: np.ndarray

    def describe(self) -> str:
        """Short summary: how many relations chose each value."""
        lambdas = _histogram(LAMBDAS, self.lambda_index)
        return f"lambda {lambdas}; alpha {_histogram(ALPHAS, self.alpha_index)}"

    def to_dict(self) -> dict[str, object]:
        """The summary and every relation's lambda and alpha (id order, inverses after), as
        JSON: what a report or an export manifest records of the tuning."""
        return {
            "description": self.describe(),
            "lambda": [LAMBDAS[i] for i in self.lambda_index.tolist()],
            "alpha": [ALPHAS[i] for i in self.alpha_index.tolist()],
        }


def _histogram(grid: tuple[float, ...], index: np.ndarray) -> str:
    counts = np.bincount(index, minlength=len(grid))
    return ", ".join(f"{grid[i]:g}: {counts[i]}" for i in np.flatnonzero(counts))


def tune_recurrency(bench: Benchmark, split: str = "valid") -> RecurrencyParams:
    """lambda per relation for psi alone, then alpha per relation with it (module doc)."""
    total = 2 * bench.num_relations
    lambda_sweep = sweep(bench, split, _lambda_grid)
    lambda_index = select_per_relation(_filtered_rr(lambda_sweep), lambda_sweep.relation, total)
    alpha_sweep = sweep(bench, split, lambda s: _alpha_grid(s, lambda_index))
    alpha_index = select_per_relation(_filtered_rr(alpha_sweep), alpha_sweep.relation, total)
    return RecurrencyParams(lambda_index, alpha_index)


def _filtered_rr(result: SweepResult) -> np.ndarray:
    return np.stack([reciprocal_rank(counts) for counts in result.filtered])


def _lambda_grid(scores: StepScores) -> Iterable[np.ndarray]:
    n = len(scores.queries)
    return (scores.strict(np.full(n, i)) for i in range(len(LAMBDAS)))


def _alpha_grid(scores: StepScores, lambda_index: np.ndarray) -> Iterable[np.ndarray]:
    per_query = lambda_index[scores.queries.relation]
    n = len(scores.queries)
    return (scores.combined(per_query, np.full(n, alpha)) for alpha in ALPHAS)


def recurrency_scores(scores: StepScores, params: RecurrencyParams) -> np.ndarray:
    """The ``recurrency`` method (alpha psi + (1 - alpha) xi, each relation's tuned values)."""
    relation = scores.queries.relation
    alpha = np.asarray(ALPHAS)[params.alpha_index[relation]]
    return scores.combined(params.lambda_index[relation], alpha)


class RecurrencyScorer:
    """The tuned ``recurrency`` method's scores of given objects, for queries asked step by step
    in time order (the embedding export scores each question's candidates with it).

    Single-step like :func:`sweep`: a query at step ``t`` is scored from every fact before ``t``.
    Each step builds the dense scores of its distinct ``(s, r)`` only, not of every query.
    """

    def __init__(self, bench: Benchmark, params: RecurrencyParams) -> None:
        self.history = full_history(bench)
        self.params = params
        self._last_t: int | None = None

    def scores(
        self, t: int, subject: np.ndarray, relation: np.ndarray, objects: np.ndarray
    ) -> np.ndarray:
        """``[Q, K]``: the score of ``objects[i]`` for ``(subject[i], relation[i], ?, t)``."""
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"steps must be asked in time order: {t} after {self._last_t}")
        self._last_t = t
        self.history.advance_to(t)
        pairs, row = np.unique(np.stack([subject, relation], axis=1), axis=0, return_inverse=True)
        matrix = recurrency_scores(StepScores(self.history, _unlabelled(t, pairs)), self.params)
        return matrix[row.reshape(-1, 1), np.asarray(objects)]


def _unlabelled(t: int, pairs: np.ndarray) -> StepQueries:
    """Queries ``(s, r, ?, t)`` whose answer is not known: gold -1 and nothing to filter (only
    ranking reads those)."""
    none = np.zeros(0, dtype=np.int64)
    return StepQueries(t, pairs[:, 0], pairs[:, 1], np.full(len(pairs), -1), none, none)


def evaluate(
    bench: Benchmark, params: RecurrencyParams, split: str = "test"
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Metrics of every method in METHODS: {method: {"time-aware": {...}, "raw": {...}}}."""

    def variants(scores: StepScores) -> Iterable[np.ndarray]:
        yield scores.frequency()
        yield scores.relaxed
        yield scores.strict(params.lambda_index[scores.queries.relation])
        yield recurrency_scores(scores, params)

    result = sweep(bench, split, variants)
    return {
        method: {"time-aware": summarise(filtered), "raw": summarise(raw)}
        for method, raw, filtered in zip(METHODS, result.raw, result.filtered, strict=True)
    }


# ------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol eval-baselines",
        description="Frequency and recurrency baselines on a TKG benchmark (ranking protocol: "
        "all entities, object + inverse queries, single-step, raw and time-aware filtered). "
        "Tunes recurrency on the valid split, evaluates the test split, and writes "
        "reports/eval.json and reports/eval.md.",
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="benchmark directory (RE-Net layout)"
    )
    parser.add_argument("--name", help="dataset name in the report (default: directory name)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="reports directory")
    return parser


def run(
    data: Path, name: str | None, reports: Path
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Tune on valid, evaluate test, write every method to ``reports``; returns the metrics."""
    started = time.perf_counter()
    bench = Benchmark.from_dataset(load_tkg(data), name)
    params = tune_recurrency(bench)
    tuned = time.perf_counter()
    results = evaluate(bench, params)
    done = time.perf_counter()
    command = _command(data, name, reports)
    notes = f"recurrency hyper-parameters chosen on valid: {params.describe()}"
    for method, by_filter in results.items():
        for filter_name, metrics in by_filter.items():
            eval_report.write_ranking(
                bench.name,
                eval_report.method_key(method, filter_name),
                {**metrics, "filter": filter_name},
                reports / "eval.json",
                command=command,
                notes=notes if method.startswith("recurrency") else None,
            )
    print(_table(bench.name, results))
    print(notes)
    print(f"tuning {tuned - started:.1f} s, test evaluation {done - tuned:.1f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    run(args.data, args.name, args.reports)
    return 0


def _command(data: Path, name: str | None, reports: Path) -> str:
    words = ["geopol", "eval-baselines", "--data", str(data)]
    if name:
        words += ["--name", name]
    return shlex.join([*words, "--reports", str(reports)])


def _table(name: str, results: dict[str, dict[str, dict[str, float | int]]]) -> str:
    lines = [
        f"{name} (test, object + inverse queries)",
        f"{'method':<20} {'filter':<11} "
        f"{'MRR':>7} {'H@1':>7} {'H@3':>7} {'H@10':>7} {'queries':>8}",
    ]
    for method, by_filter in results.items():
        for filter_name, m in by_filter.items():
            lines.append(
                f"{method:<20} {filter_name:<11} {m['mrr']:7.4f} {m['hits@1']:7.4f} "
                f"{m['hits@3']:7.4f} {m['hits@10']:7.4f} {m['n_queries']:8d}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
