"""Calibrators: per-candidate scores -> probabilities that mean what they say (pure math).

Each calibrator reads the ``[n, K, 3]`` features of a score table (llm, graph, recurrency score
of every candidate, shared.score_table) and returns ``[n, K]`` probabilities over the candidates,
fitted on questions whose gold is among them:

- ``temperature``: softmax(z / T) of one score column, T the one minimising NLL (Guo et al. 2017).
- ``isotonic``: an isotonic map (scikit-learn) of the softmax's top-1 confidence to its accuracy;
  the other candidates share what is left in their softmax proportions.
- ``stack``: a multinomial logit over the three features with weights shared by all candidates
  (a conditional logit), so it can lean on whichever input is best. scikit-learn's
  LogisticRegression gives every class its own weights, which fits classes with a fixed
  meaning; candidates have none (candidate 3 of one question and of the next are unrelated), so
  the same L-BFGS fit is done here over the shared weights with scipy.

Every calibrator round-trips through plain JSON (``params`` / ``from_params``): no pickle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from sklearn.isotonic import IsotonicRegression

from shared.prob_metrics import nll, softmax
from shared.score_table import FEATURES

_L2 = 1e-3  # keeps the stack's weights finite when one feature separates the training set


class Calibrator(Protocol):
    name: str

    def fit(self, features: np.ndarray, gold: np.ndarray) -> Calibrator: ...

    def probabilities(self, features: np.ndarray) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...


def _column(features: np.ndarray, source: str) -> np.ndarray:
    return np.asarray(features, dtype=np.float64)[..., FEATURES.index(source)]


class Temperature:
    """softmax(z / T) of the ``source`` scores; T > 0 fitted by NLL on log T (bounded)."""

    name = "temperature"

    def __init__(self, source: str = "llm", temperature: float = 1.0) -> None:
        self.source = source
        self.temperature = temperature

    def fit(self, features: np.ndarray, gold: np.ndarray) -> Temperature:
        z = _column(features, self.source)
        found = minimize_scalar(
            lambda log_t: nll(softmax(z / np.exp(log_t)), gold),
            bounds=(np.log(1e-3), np.log(1e3)),
            method="bounded",
        )
        self.temperature = float(np.exp(found.x))
        return self

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(_column(features, self.source) / self.temperature)

    def params(self) -> dict[str, Any]:
        return {"source": self.source, "temperature": self.temperature}


class Isotonic:
    """Top-1 confidence of softmax(z) mapped through an isotonic fit to its accuracy."""

    name = "isotonic"

    def __init__(
        self, source: str = "llm", x: list[float] | None = None, y: list[float] | None = None
    ) -> None:
        self.source = source
        self.x = np.asarray(x if x is not None else [0.0, 1.0], dtype=np.float64)
        self.y = np.asarray(y if y is not None else [0.0, 1.0], dtype=np.float64)

    def fit(self, features: np.ndarray, gold: np.ndarray) -> Isotonic:
        p = softmax(_column(features, self.source))
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            p.max(axis=1), (p.argmax(axis=1) == gold).astype(np.float64)
        )
        self.x, self.y = fitted.X_thresholds_, fitted.y_thresholds_
        return self

    def top_confidence(self, confidence: np.ndarray) -> np.ndarray:
        """The isotonic map of a raw top-1 confidence (monotone non-decreasing)."""
        return np.clip(np.interp(confidence, self.x, self.y), 0.0, 1.0 - 1e-6)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        p = softmax(_column(features, self.source))
        k = p.shape[1]
        rows = np.arange(len(p))
        ranked = np.sort(p, axis=1)
        confidence, second = ranked[:, -1], ranked[:, -2]
        top = p.argmax(axis=1)
        rest = np.maximum(1.0 - confidence, 1e-12)
        # the pick stays the pick: never below 1/K, nor below what the runner-up is scaled to
        floor = np.maximum(1.0 / k, second / (rest + second)) + 1e-9
        mapped = np.maximum(self.top_confidence(confidence), floor)
        out = p * ((1.0 - mapped) / rest)[:, None]
        out[rows, top] = mapped
        return out

    def params(self) -> dict[str, Any]:
        return {"source": self.source, "x": self.x.tolist(), "y": self.y.tolist()}


class Stack:
    """p_k proportional to exp(w . standardised features_k): one weight per input score."""

    name = "stack"

    def __init__(
        self,
        weights: list[float] | None = None,
        mean: list[float] | None = None,
        scale: list[float] | None = None,
    ) -> None:
        width = len(FEATURES)
        self.weights = np.asarray(weights if weights is not None else [1.0, 0.0, 0.0])
        self.mean = np.asarray(mean if mean is not None else np.zeros(width))
        self.scale = np.asarray(scale if scale is not None else np.ones(width))

    def _standard(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.mean) / self.scale

    def fit(self, features: np.ndarray, gold: np.ndarray) -> Stack:
        flat = np.asarray(features, dtype=np.float64).reshape(-1, features.shape[-1])
        self.mean = flat.mean(axis=0)
        self.scale = np.where(flat.std(axis=0) > 1e-9, flat.std(axis=0), 1.0)
        x = self._standard(features)
        rows = np.arange(len(gold))

        def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
            p = softmax(x @ w)
            loss = -np.log(np.maximum(p[rows, gold], 1e-300)).mean() + _L2 * w @ w
            grad = -(x[rows, gold] - np.einsum("nk,nkf->nf", p, x)).mean(axis=0) + 2 * _L2 * w
            return float(loss), grad

        found = minimize(loss_and_grad, np.zeros(x.shape[-1]), jac=True, method="L-BFGS-B")
        self.weights = found.x
        return self

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(self._standard(features) @ self.weights)

    def params(self) -> dict[str, Any]:
        return {
            "weights": self.weights.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "features": list(FEATURES),
        }


CALIBRATORS: dict[str, Callable[..., Calibrator]] = {
    "temperature": Temperature,
    "isotonic": Isotonic,
    "stack": Stack,
}


def from_params(name: str, params: dict[str, Any]) -> Calibrator:
    """Rebuild a saved calibrator; unknown names and fields are refused with both named."""
    if name not in CALIBRATORS:
        raise ValueError(f"calibrator {name!r} is not one of {sorted(CALIBRATORS)}")
    fields = {k: v for k, v in params.items() if k != "features"}
    if "features" in params and list(params["features"]) != list(FEATURES):
        raise ValueError(f"stack saved over {params['features']}, this code reads {FEATURES}")
    try:
        return CALIBRATORS[name](**fields)
    except TypeError as exc:
        raise ValueError(f"calibrator {name!r}: bad parameters {sorted(fields)} ({exc})") from exc


def cross_validated_nll(
    make: Callable[[], Calibrator],
    features: np.ndarray,
    gold: np.ndarray,
    folds: int = 5,
    seed: int = 0,
) -> float:
    """Out-of-fold NLL: each fold scored by a calibrator fitted on the others (how the best
    calibrator is chosen on one validation set without rewarding overfitting)."""
    n = len(gold)
    folds = max(2, min(folds, n))
    assignment = np.random.default_rng(seed).permutation(n) % folds
    total = 0.0
    for fold in range(folds):
        test = assignment == fold
        fitted = make().fit(features[~test], gold[~test])
        total += nll(fitted.probabilities(features[test]), gold[test]) * test.sum()
    return float(total / n)
