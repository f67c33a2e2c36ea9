"""``geopol train calibrate``: fit the calibrators on validation score tables and save them.

Each ``--table`` is a score table of validation questions the LLM never trained on (``geopol
llm score --tail``), one per protocol: a ``live`` table (the graph's own top-K, misses
included) makes the calibration the service applies and fits ``other``; a ``tgl-mcq`` table
calibrates the benchmark protocol. Temperature, isotonic and stack are all fitted; the one with
the lowest out-of-fold NLL is chosen per protocol, and all three are kept for the report. The
live calibration also keeps the recurrency baseline's scores turned into probabilities the same
way, which the stage forecasts beside its own for the online scorecard.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.calibrate import artifact
from services.calibrate.fit import YARDSTICKS, CalibrationError, fit_protocol
from shared import score_table
from shared.config import DEFAULT_CONFIG, ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol train calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument(
        "--table",
        type=Path,
        action="append",
        required=True,
        help="validation score table (repeatable, one per protocol)",
    )
    parser.add_argument(
        "--out", type=Path, help="artifact folder (default: the config's calibrator artifact)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        tables = {}
        for path in args.table:
            table = score_table.load(path)
            protocol = table.meta.get("protocol")
            if protocol in tables:
                raise CalibrationError(f"two {protocol} tables: {tables[protocol][0]} and {path}")
            tables[protocol] = (path, table)
        fits = {
            p: fit_protocol(t, seed=args.seed, yardsticks=YARDSTICKS)
            for p, (_, t) in tables.items()
        }
        out = args.out or config.calibrator_artifact
        saved = artifact.save(out, fits, {p: path for p, (path, _) in tables.items()})
    except (
        ConfigError,
        score_table.ScoreTableError,
        CalibrationError,
        artifact.CalibratorArtifactError,
        OSError,
    ) as exc:
        print(f"geopol train calibrate: {exc}", file=sys.stderr)
        return 2
    for protocol, fit in fits.items():
        cv = ", ".join(f"{name} {value:.4f}" for name, value in sorted(fit.cv_nll.items()))
        extra = f", {fit.misses} misses (other fitted)" if fit.other is not None else ""
        print(
            f"{protocol} K={fit.k}: chose {fit.chosen} (out-of-fold NLL: {cv}) "
            f"on {fit.n} questions{extra}"
        )
    print(f"calibrator {saved.directory} ({saved.artifact_id[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
