"""``geopol eval calibrate``: how well the saved calibrator's probabilities hold on test questions.

For every ``--test`` score table (the same sampled questions as ``geopol eval llm``), against the
raw softmax of the LLM's letter logits: ECE (15 bins, top-1), multi-class Brier, NLL and
accuracy of each calibrator in the artifact, and, as the yardsticks the issue names, the graph's
and the recurrency baseline's scores turned into probabilities the same way (temperature and
isotonic fitted on the same ``--valid`` tables the artifact was fitted on, checked by sha256).
In the live protocol every forecast has ``other`` and a retrieval miss is scored as its truth.
Writes ``calibration`` (one entry per protocol) and ``<method>+<calibrator>`` rows into
reports/eval.json, and a reliability diagram per protocol beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from services.calibrate import artifact
from services.calibrate.fit import (
    CalibrationError,
    ProtocolCalibration,
    fit_protocol,
    truth_with_other,
)
from services.calibrate.reliability_plot import plot_reliability
from shared import eval_report, prob_metrics, score_table
from shared.config import DEFAULT_CONFIG, ConfigError, load_config
from shared.manifest import file_sha256

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
    return parser


def _with_truth(table: score_table.ScoreTable, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and truths the metrics read: a live forecast without ``other`` gets a zero
    ``other`` column, so a miss is scored as the zero probability it was given."""
    if table.meta.get("protocol") != "live":
        return probs, table.gold
    if probs.shape[1] == table.k:
        probs = np.concatenate([probs, np.zeros((len(probs), 1))], axis=1)
    return probs, truth_with_other(table)


def measure(
    fit: ProtocolCalibration,
    test: score_table.ScoreTable,
    yardsticks: dict[str, ProtocolCalibration],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``calibration`` entry of one protocol, and the probabilities behind it by name."""
    features = test.features()
    probs = {"before": prob_metrics.softmax(test.llm)}
    for name in fit.calibrators:
        probs[name] = fit.forecast(features, name)
    for source, calibration in yardsticks.items():
        for name in ("temperature", "isotonic"):
            probs[f"{source}+{name}"] = calibration.forecast(features, name)
    scored = {name: prob_metrics.summary(*_with_truth(test, p)) for name, p in probs.items()}
    before, after = scored["before"], scored[fit.chosen]
    entry = {
        "method": fit.chosen,
        "protocol": fit.protocol,
        "K": fit.k,
        "n": len(test),
        **{f"{m}_before": before[m] for m in ("ece", "brier", "nll")},
        **{f"{m}_after": after[m] for m in ("ece", "brier", "nll")},
        "by_method": {n: s for n, s in scored.items() if n != "before"},
    }
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
            lines += _evaluate_one(saved, score_table.load(path), valid, args.reports)
    except (
        ConfigError,
        score_table.ScoreTableError,
        CalibrationError,
        artifact.CalibratorArtifactError,
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
        {s: fit_protocol(valid[protocol], source=s) for s in YARDSTICKS}
        if protocol in valid
        else {}
    )
    entry, probs = measure(fit, test, yardsticks)
    dataset = test.meta.get("dataset", "unknown")
    method = test.meta.get("method", "llm")
    note = (
        f"calibrator {saved.artifact_id[:12]} ({fit.chosen}, chosen by out-of-fold NLL on "
        f"{fit.n} validation questions); {len(test)} test questions"
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
        f"NLL {entry['nll_before']:.4f} -> {entry['nll_after']:.4f} (n={len(test)})"
    ]
    lines += [
        f"  {name}: ECE {m['ece']:.4f} Brier {m['brier']:.4f} NLL {m['nll']:.4f} acc {m['acc']:.4f}"
        for name, m in entry["by_method"].items()
    ]
    return [*lines, f"  reliability diagram: {figure}"]


if __name__ == "__main__":
    sys.exit(main())
