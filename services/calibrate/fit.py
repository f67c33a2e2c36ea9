"""Fit the calibration of one protocol from a validation score table, and apply it.

All three calibrators are fitted on the questions whose gold is among the candidates; the one
with the lowest out-of-fold NLL is chosen (each is scored on folds it was not fitted on, so a
flexible calibrator does not win by memorising). A live table also fits ``other`` on every
question, misses included, from the chosen calibrator's in-set probabilities.

Beside it, each *yardstick* — a baseline whose scores the stage receives with every question (the
recurrency baseline's) — is turned into probabilities the same way: temperature and isotonic on
its own score column, chosen by out-of-fold NLL, with its own ``other``. The stage forecasts
with it too, so the online scorecard shows the pipeline beside the baseline on the very same
questions (``geopol eval online``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.calibrate.calibrators import CALIBRATORS, Calibrator, cross_validated_nll, from_params
from services.calibrate.other import OtherModel, with_other
from shared.score_table import ScoreTable

FOLDS = 5
YARDSTICKS = ("recurrency",)
"""Score columns turned into forecasts of their own for comparison (never the stack)."""
SINGLE_SOURCE = ("temperature", "isotonic")
"""The calibrators that read one score column: what a yardstick is fitted with."""


class CalibrationError(ValueError):
    """Validation data a calibration cannot be fitted on; the message says what is missing."""


@dataclass
class ProtocolCalibration:
    """The fitted calibrators of one protocol (``tgl-mcq`` or ``live``) at one K."""

    protocol: str
    k: int
    chosen: str
    calibrators: dict[str, Calibrator]
    cv_nll: dict[str, float]
    n: int
    other: OtherModel | None = None
    misses: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    yardsticks: dict[str, ProtocolCalibration] = field(default_factory=dict)
    """Score column -> its own calibration (live only), forecast beside the chosen one."""

    def in_set(self, features: np.ndarray, name: str | None = None) -> np.ndarray:
        """``[n, K]`` probabilities over the candidates, assuming the truth is among them."""
        return self.calibrators[name or self.chosen].probabilities(features)

    def forecast(self, features: np.ndarray, name: str | None = None) -> np.ndarray:
        """``[n, K]`` for tgl-mcq; ``[n, K + 1]`` (the last column ``other``) for live."""
        p = self.in_set(features, name)
        if self.other is None:
            return p
        return with_other(p, self.other.probability(features, p))

    def params(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "K": self.k,
            "chosen": self.chosen,
            "cv_nll": self.cv_nll,
            "n": self.n,
            "misses": self.misses,
            "source": self.source,
            "calibrators": {name: c.params() for name, c in self.calibrators.items()},
            "other": self.other.params() if self.other is not None else None,
            "yardsticks": {name: y.params() for name, y in self.yardsticks.items()},
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ProtocolCalibration:
        return cls(
            protocol=params["protocol"],
            k=int(params["K"]),
            chosen=params["chosen"],
            calibrators={n: from_params(n, p) for n, p in params["calibrators"].items()},
            cv_nll={n: float(v) for n, v in params["cv_nll"].items()},
            n=int(params["n"]),
            misses=int(params.get("misses", 0)),
            source=dict(params.get("source", {})),
            other=OtherModel.from_params(params["other"]) if params.get("other") else None,
            yardsticks={
                name: cls.from_params(y) for name, y in params.get("yardsticks", {}).items()
            },
        )


def truth_with_other(table: ScoreTable) -> np.ndarray:
    """The truth index of each question in a forecast with ``other`` (a miss is index K)."""
    return np.where(table.gold >= 0, table.gold, table.k)


def fit_protocol(
    table: ScoreTable,
    seed: int = 0,
    source: str = "llm",
    names: Sequence[str] = tuple(CALIBRATORS),
    yardsticks: Sequence[str] = (),
) -> ProtocolCalibration:
    """Fit the calibrators ``names`` (default temperature, isotonic and stack) on ``table``;
    choose by out-of-fold NLL.

    ``source`` is the score column temperature and isotonic read (``recurrency`` turns the
    baseline's scores into probabilities the same way, for comparison); each of ``yardsticks``
    is fitted that way as well and kept in the calibration of a live table."""
    protocol = table.meta.get("protocol", "tgl-mcq")
    hits = table.gold >= 0
    if hits.sum() < 2 * FOLDS:
        raise CalibrationError(
            f"{int(hits.sum())} questions with the gold among the candidates; fitting needs at "
            f"least {2 * FOLDS} (score more validation rows with `geopol llm score`)"
        )
    features, gold = table.features()[hits], table.gold[hits]

    def make(name: str) -> Calibrator:
        return CALIBRATORS[name]() if name == "stack" else CALIBRATORS[name](source=source)

    cv = {
        name: cross_validated_nll(lambda n=name: make(n), features, gold, FOLDS, seed)
        for name in names
    }
    fitted = {name: make(name).fit(features, gold) for name in names}
    chosen = min(cv, key=cv.__getitem__)
    calibration = ProtocolCalibration(
        protocol=protocol,
        k=table.k,
        chosen=chosen,
        calibrators=fitted,
        cv_nll=cv,
        n=len(table),
        misses=int((~hits).sum()),
        source={
            k: v
            for k, v in table.meta.items()
            if k in ("dataset", "split", "method", "llm_artifact", "graph_artifact")
        },
    )
    if protocol == "live":
        everything = table.features()
        calibration.other = OtherModel().fit(everything, calibration.in_set(everything), ~hits)
        calibration.yardsticks = {
            column: fit_protocol(table, seed, source=column, names=SINGLE_SOURCE)
            for column in yardsticks
        }
    return calibration
