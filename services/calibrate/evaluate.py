"""``geopol eval calibrate``: how well the saved calibrator's probabilities hold on test questions.

For every ``--test`` score table (the same sampled questions as ``geopol eval llm``), against the
raw softmax of the LLM's letter logits: ECE (15 bins, top-1), multi-class Brier, NLL and
accuracy of each calibrator in the artifact, and, as the yardsticks the issue names, the graph's
and the recurrency baseline's scores turned into probabilities the same way (temperature and
isotonic fitted on the same ``--valid`` tables the artifact was fitted on, checked by sha256).
In the live protocol every forecast has ``other`` and a retrieval miss is scored as its truth.
Writes ``calibration`` (one entry per protocol) and ``<method>+<calibrator>`` rows into
reports/eval.json, and a reliability diagram per protocol beside it.

On the simulator, ``--truth DIR`` (the ``geopol simulate`` output folder, which holds truth/) also
compares every forecast, before calibration and after each calibrator, with the world's exact
next-slot distribution: mean absolute error over the K candidates and ``other``, and
KL(truth || forecast), averaged over the questions that have a truth (``truth_mae_before``,
``truth_mae_after``, ``truth_kl_before``, ``truth_kl_after``, ``truth_n`` beside the ECE, the
rows without one counted in ``truth_missing``). Each row's query comes from the embedding export
the table names (or ``--export``), its keys from the dataset folder (``--data``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from services.calibrate import artifact
from services.calibrate.fit import (
    SINGLE_SOURCE,
    CalibrationError,
    ProtocolCalibration,
    fit_protocol,
    truth_with_other,
)
from services.calibrate.reliability_plot import plot_reliability
from services.calibrate.resolution import against_truth
from services.calibrate.truth_rows import RowTruth, TruthError, row_truth, store_keys, table_export
from shared import eval_report, prob_metrics, score_table
from shared.calendar import CalendarError
from shared.config import DEFAULT_CONFIG, ConfigError, load_config
from shared.embedding_export import ExportError
from shared.manifest import file_sha256
from shared.tkg_dataset import TkgFormatError

YARDSTICKS = ("graph", "recurrency")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol eval calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument("--artifact", type=Path, help="calibrator (default: the config's)")
    parser.add_argument(
        "--valid", type=Path, action="append", default=[], help="the tables it was fitted on"
    )
    parser.add_argument(
        "--test", type=Path, action="append", required=True, help="test score table (repeatable)"
    )
    parser.add_argument("--reports", type=Path, default=Path("reports/eval.json"))
    parser.add_argument(
        "--truth",
        type=Path,
        help="simulator output folder (holds truth/): compare forecasts with the exact truth",
    )
    parser.add_argument(
        "--export",
        type=Path,
        help="with --truth: the embedding export of every --test table (default: the one it names)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="with --truth: the dataset folder of that export (default: the config's)",
    )
    return parser


def _with_other(probs: np.ndarray, k: int) -> np.ndarray:
    """``[n, K + 1]``: a forecast without ``other`` gets a zero ``other`` column."""
    if probs.shape[1] == k:
        return np.concatenate([probs, np.zeros((len(probs), 1))], axis=1)
    return probs


def _with_truth(table: score_table.ScoreTable, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and truths the metrics read: a live forecast without ``other`` gets a zero
    ``other`` column, so a miss is scored as the zero probability it was given."""
    if table.meta.get("protocol") != "live":
        return probs, table.gold
    return _with_other(probs, table.k), truth_with_other(table)


def compare_with_truth(
    probs: dict[str, np.ndarray], truth: RowTruth, k: int
) -> dict[str, dict[str, float]]:
    """Mean MAE and KL(truth || forecast) of each named forecast over the rows with a truth."""
    compared = {}
    for name, p in probs.items():
        mae, kl = against_truth(_with_other(p, k)[truth.known], truth.true[truth.known])
        compared[name] = {"truth_mae": float(mae.mean()), "truth_kl": float(kl.mean())}
    return compared


def measure(
    fit: ProtocolCalibration,
    test: score_table.ScoreTable,
    yardsticks: dict[str, ProtocolCalibration],
    truth: RowTruth | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``calibration`` entry of one protocol, and the probabilities behind it by name; with
    the world's ``truth``, each forecast's distance to it too."""
    features = test.features()
    probs = {"before": prob_metrics.softmax(test.llm)}
    for name in fit.calibrators:
        probs[name] = fit.forecast(features, name)
    for source, calibration in yardsticks.items():
        for name in ("temperature", "isotonic"):
            probs[f"{source}+{name}"] = calibration.forecast(features, name)
    scored = {name: prob_metrics.summary(*_with_truth(test, p)) for name, p in probs.items()}
    metrics = ["ece", "brier", "nll"]
    if truth is not None:
        for name, distance in compare_with_truth(probs, truth, test.k).items():
            scored[name] |= distance
        metrics += ["truth_mae", "truth_kl"]
    before, after = scored["before"], scored[fit.chosen]
    entry = {
        "method": fit.chosen,
        "protocol": fit.protocol,
        "K": fit.k,
        "n": len(test),
        **{f"{m}_before": before[m] for m in metrics},
        **{f"{m}_after": after[m] for m in metrics},
        "by_method": {n: s for n, s in scored.items() if n != "before"},
    }
    floor, floor_p95 = prob_metrics.ece_floor(_with_truth(test, probs[fit.chosen])[0])
    entry |= {"ece_floor": floor, "ece_floor_p95": floor_p95}
    if truth is not None:
        entry |= {"truth_n": int(truth.known.sum()), "truth_missing": int((~truth.known).sum())}
    return entry, probs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        saved = artifact.load(args.artifact or config.calibrator_artifact)
        valid = {}
        for path in args.valid:
            table = score_table.load(path)
            protocol = table.meta.get("protocol")
            listed = saved.manifest["tables"].get(protocol, {}).get("sha256")
            if listed != file_sha256(path):
                raise CalibrationError(
                    f"--valid {path}: not the {protocol} table calibrator {saved.directory} "
                    "was fitted on (sha256 differs)"
                )
            valid[protocol] = table
        lines = []
        for path in args.test:
            test = score_table.load(path)
            truth = None
            if args.truth is not None:
                export = table_export(test, str(path), args.export)
                keys = store_keys(args.data or config.dataset_dir, export)
                truth = row_truth(test, export, keys, args.truth)
            lines += _evaluate_one(saved, test, valid, args.reports, truth)
    except (
        ConfigError,
        score_table.ScoreTableError,
        CalibrationError,
        artifact.CalibratorArtifactError,
        TruthError,
        ExportError,
        TkgFormatError,
        CalendarError,
        OSError,
    ) as exc:
        print(f"geopol eval calibrate: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _evaluate_one(
    saved: artifact.CalibratorArtifact,
    test: score_table.ScoreTable,
    valid: dict[str, score_table.ScoreTable],
    reports: Path,
    truth: RowTruth | None = None,
) -> list[str]:
    protocol = test.meta.get("protocol")
    fit = saved.protocol(protocol)
    if test.k != fit.k:
        raise CalibrationError(f"test table has K={test.k}, the {protocol} calibration K={fit.k}")
    if test.meta.get("llm_artifact") != saved.manifest.get("llm_artifact"):
        raise CalibrationError(
            f"test scores of llm artifact {str(test.meta.get('llm_artifact'))[:12]}, the "
            f"calibrator was fitted on {str(saved.manifest.get('llm_artifact'))[:12]}"
        )
    yardsticks = (
        {s: fit_protocol(valid[protocol], source=s, names=SINGLE_SOURCE) for s in YARDSTICKS}
        if protocol in valid
        else {}
    )
    entry, probs = measure(fit, test, yardsticks, truth)
    dataset = test.meta.get("dataset", "unknown")
    method = test.meta.get("method", "llm")
    note = (
        f"calibrator {saved.artifact_id[:12]} ({fit.chosen}, chosen by out-of-fold NLL on "
        f"{fit.n} validation questions); {len(test)} test questions"
    )
    if truth is not None:
        without = "; ".join(f"{n} {why}" for why, n in truth.missing.items()) or "none"
        note += (
            f"; truth_*: against the simulator's exact distribution on {entry['truth_n']} of "
            f"them (without one: {without})"
        )
    eval_report.write_entries(dataset, ("calibration",), {protocol: entry}, reports, notes=note)
    after = entry["by_method"][fit.chosen]
    row: dict[str, Any] = {
        "K": fit.k,
        "n": len(test),
        **{m: after[m] for m in ("ece", "brier", "nll")},
    }
    if protocol == "live":
        # the calibrated forecast's own pick among the K (``other`` is not a candidate)
        hits = (probs[fit.chosen][:, : fit.k].argmax(1) == test.gold) & (test.gold >= 0)
        row |= {"recall@K": float((test.gold >= 0).mean()), "hits@1": float(hits.mean())}
        section: tuple[str, ...] = ("live",)
    else:
        row["acc"] = after["acc"]
        section = ("tgl-mcq", f"K{fit.k}")
    eval_report.write_entries(
        dataset, section, {f"{method}+{fit.chosen}": row}, reports, notes=note
    )
    figure = plot_reliability(
        {
            "before": _with_truth(test, probs["before"]),
            fit.chosen: _with_truth(test, probs[fit.chosen]),
        },
        reports.parent / f"reliability-{dataset}-{protocol}.png",
        title=f"{dataset} {protocol} K={fit.k} (n={len(test)})",
    )
    lines = [
        f"{protocol} K={fit.k} {fit.chosen}: ECE {entry['ece_before']:.4f} -> {entry['ece_after']:.4f}, "
        f"Brier {entry['brier_before']:.4f} -> {entry['brier_after']:.4f}, "
        f"NLL {entry['nll_before']:.4f} -> {entry['nll_after']:.4f} (n={len(test)}; a perfectly "
        f"calibrated forecast would show ECE {entry['ece_floor']:.4f} on as many, 95% "
        f"{entry['ece_floor_p95']:.4f})"
    ]
    if truth is not None:
        without = ", ".join(f"{n} {why}" for why, n in truth.missing.items())
        lines.append(
            f"  vs the simulator's truth: MAE {entry['truth_mae_before']:.4f} -> "
            f"{entry['truth_mae_after']:.4f}, KL {entry['truth_kl_before']:.4f} -> "
            f"{entry['truth_kl_after']:.4f} (n={entry['truth_n']}; "
            f"{entry['truth_missing']} without a truth{': ' + without if without else ''})"
        )
    lines += [
        f"  {name}: ECE {m['ece']:.4f} Brier {m['brier']:.4f} NLL {m['nll']:.4f} acc {m['acc']:.4f}"
        + (f" truth MAE {m['truth_mae']:.4f} KL {m['truth_kl']:.4f}" if "truth_mae" in m else "")
        for name, m in entry["by_method"].items()
    ]
    return [*lines, f"  reliability diagram: {figure}"]


if __name__ == "__main__":
    sys.exit(main())
