"""``other``: the probability that the truth is none of the K candidates (live use).

In live use the candidates are the graph's own top-K, and its recall@K is well below 1: K
probabilities that sum to 1 then overstate every one of them. A logistic regression
(scikit-learn) on a handful of per-question signals — how sure the calibrated in-set
distribution is, how strong the graph's and the recurrency baseline's best candidates are, how
far the graph's best stands out — estimates the miss probability; the forecast is then
``(1 - other) * p_in_set`` and ``other``, which sums to 1 and is scored against the truth with
misses included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from shared.score_table import FEATURES

SIGNALS = ("top_probability", "entropy", "graph_top", "graph_margin", "recurrency_top")


def signals(features: np.ndarray, in_set: np.ndarray) -> np.ndarray:
    """``[n, len(SIGNALS)]`` per-question inputs of the miss model."""
    graph = np.sort(np.asarray(features[..., FEATURES.index("graph")], np.float64), axis=1)
    recurrency = np.asarray(features[..., FEATURES.index("recurrency")], np.float64)
    p = np.clip(in_set, 1e-12, 1.0)
    return np.stack(
        [
            in_set.max(axis=1),
            -(p * np.log(p)).sum(axis=1),
            graph[:, -1],
            graph[:, -1] - graph[:, -2],
            recurrency.max(axis=1),
        ],
        axis=1,
    )


class OtherModel:
    """P(miss | question signals); ``base_rate`` alone when validation had one class only."""

    def __init__(
        self,
        coef: list[float] | None = None,
        intercept: float = 0.0,
        mean: list[float] | None = None,
        scale: list[float] | None = None,
        base_rate: float | None = None,
    ) -> None:
        width = len(SIGNALS)
        self.coef = np.asarray(coef if coef is not None else np.zeros(width))
        self.intercept = float(intercept)
        self.mean = np.asarray(mean if mean is not None else np.zeros(width))
        self.scale = np.asarray(scale if scale is not None else np.ones(width))
        self.base_rate = base_rate

    def fit(self, features: np.ndarray, in_set: np.ndarray, missed: np.ndarray) -> OtherModel:
        x = signals(features, in_set)
        missed = np.asarray(missed, dtype=bool)
        if missed.all() or not missed.any():
            self.base_rate = float(np.clip(missed.mean(), 1e-4, 1 - 1e-4))
            return self
        self.base_rate = None
        self.mean = x.mean(axis=0)
        self.scale = np.where(x.std(axis=0) > 1e-9, x.std(axis=0), 1.0)
        model = LogisticRegression(C=1.0).fit((x - self.mean) / self.scale, missed)
        self.coef, self.intercept = model.coef_[0], float(model.intercept_[0])
        return self

    def probability(self, features: np.ndarray, in_set: np.ndarray) -> np.ndarray:
        if self.base_rate is not None:
            return np.full(len(in_set), self.base_rate)
        z = ((signals(features, in_set) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def params(self) -> dict[str, Any]:
        return {
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "base_rate": self.base_rate,
            "signals": list(SIGNALS),
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> OtherModel:
        if list(params.get("signals", [])) != list(SIGNALS):
            raise ValueError(
                f"other model saved over {params.get('signals')}, this code reads {SIGNALS}"
            )
        return cls(**{k: v for k, v in params.items() if k != "signals"})


def with_other(in_set: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``[n, K + 1]``: the in-set probabilities scaled by ``1 - other``, then ``other``."""
    return np.concatenate([in_set * (1.0 - other)[:, None], other[:, None]], axis=1)
