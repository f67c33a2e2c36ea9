"""``geopol eval online``: the calibrate stage's resolved steps as an online scorecard report.

Reads the stage's ledger (RUN_DIR/calibrate/DATASET/forecasts.sqlite: one card per resolved
step, every forecast with its lineage), cuts the steps into windows of ``--window`` and writes,
under ``"<dataset>": {"online": {"<label>": ...}}`` of reports/eval.json, the rolling scorecard
of every window for the pipeline and for the recurrency baseline scored on the same questions
(services/calibrate/online.py), each step's OOV rate and the graph artifacts that served each
window; and a PNG of both over time beside eval.md (``online-<dataset>-<label>.png``).
``geopol replay`` runs it at the end of a replay; run it by hand on any pipeline's run dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgpack

from services.calibrate.ledger import Ledger
from services.calibrate.online import scorecards
from services.calibrate.online_plot import plot_online
from services.calibrate.service import ledger_path
from shared import eval_report
from shared.config import DEFAULT_CONFIG, ConfigError, load_config

ALL_CARDS = 1 << 31


class OnlineReportError(RuntimeError):
    """Nothing to report; the message says what is missing."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol eval online",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument(
        "--window", type=int, default=7, help="resolved steps per window (default 7)"
    )
    parser.add_argument(
        "--label",
        default="pipeline",
        help="the entry's name under online (e.g. retrain, no-retrain; default pipeline)",
    )
    parser.add_argument("--reports", type=Path, default=Path("reports/eval.json"))
    parser.add_argument("--note", help="added to the entry's notes in eval.md")
    return parser


def read_run(
    ledger: Ledger,
) -> tuple[list[dict[str, Any]], dict[int, list[str]], dict[int, str]]:
    """Every resolved step's card, the graph artifacts whose forecasts each step holds, and
    the date those forecasts name."""
    cards = [msgpack.unpackb(body, raw=False) for _, _, body in ledger.scorecards(ALL_CARDS)]
    served: dict[int, list[str]] = {}
    dates: dict[int, str] = {}
    for card in cards:
        step = int(card["step"])
        artifacts = set()
        for row in ledger.of_step(step):
            meta = msgpack.unpackb(row.parts[1], raw=False)["meta"]
            lineage = meta.get("lineage") or {}
            if lineage.get("graph_artifact"):
                artifacts.add(str(lineage["graph_artifact"]))
            if isinstance(meta.get("date"), str):
                dates[step] = meta["date"]
        served[step] = sorted(artifacts)
    return cards, served, dates


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        path = ledger_path(config)
        if not path.is_file():
            raise OnlineReportError(
                f"{path}: no forecast ledger; run the pipeline (make pipeline-up, or geopol "
                "replay) until steps resolve"
            )
        ledger = Ledger(path)
        try:
            cards, served, dates = read_run(ledger)
        finally:
            ledger.close()
        if not cards:
            raise OnlineReportError(
                f"{path}: no step resolved yet (a step resolves once a later one has data)"
            )
        report = scorecards(cards, args.window, served, dates)
        dataset = config.ingest.dataset
        png = args.reports.parent / f"online-{dataset}-{args.label}.png"
        plot_online(report, png, f"{dataset} online ({args.label}), windows of {args.window} steps")
        report["plot"] = png.name
        overall = report["overall"]
        note = (
            f"{len(cards)} resolved steps ({cards[0]['step']}..{cards[-1]['step']}) from {path.name}; "
            "recurrency: the baseline's scores of the same candidates, calibrated the same way"
            + (f"; {args.note}" if args.note else "")
        )
        eval_report.write_entries(
            dataset, ("online",), {args.label: report}, args.reports, notes=note
        )
    except (ConfigError, OnlineReportError, ValueError, OSError) as exc:
        print(f"geopol eval online: {exc}", file=sys.stderr)
        return 2
    for name, summary in overall.items():
        print(f"{name}: " + ", ".join(
            f"{key} {summary[key]:.4f}" for key in ("acc@1", "recall@K", "brier", "ece", "nll")
            if key in summary
        ) + f" (n={summary.get('n', 0)})")  # fmt: skip
    print(f"wrote {args.reports} ({dataset} online {args.label}) and {png}")
    return 0
