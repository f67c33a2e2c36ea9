"""The online scorecard over time: the resolved steps of a run, cut into windows.

The stage writes one card per resolved step (shared by the scorecard it publishes); here those
cards become what a replay reports: per window of ``window`` consecutive resolved steps, the
rolling scorecard (Acc@1, recall@K, Brier, ECE, NLL; :func:`rolling`) of the pipeline and of
each yardstick the forecasts carried (the recurrency baseline on the same questions and
candidates), the OOV rate of every step, and which graph artifacts served the window (a
retrained generation shows as a new id). Pure: the cards come in, a dict goes out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.calibrate.resolution import rolling

PIPELINE = "pipeline"


def scorecards(
    cards: Sequence[Mapping[str, Any]],
    window: int,
    served_by: Mapping[int, Sequence[str]] | None = None,
    dates: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """``{"window", "windows": [...], "overall": {...}, "steps": [...]}`` of ``cards`` (ordered
    by step). Each window and ``overall`` map ``pipeline`` and each yardstick name to its
    rolling scorecard; ``served_by`` (step -> graph artifact ids) adds who answered, ``dates``
    (step -> the date its forecasts name) the calendar."""
    dates = dates or {}
    if window < 1:
        raise ValueError(f"window must be at least 1 step, got {window}")
    ordered = sorted(cards, key=lambda card: int(card["step"]))
    windows = []
    for start in range(0, len(ordered), window):
        chunk = ordered[start : start + window]
        first, last = int(chunk[0]["step"]), int(chunk[-1]["step"])
        entry: dict[str, Any] = {"first_step": first, "last_step": last}
        if first in dates and last in dates:
            entry |= {"first_date": dates[first], "last_date": dates[last]}
        entry |= _by_forecaster(chunk)
        if served_by is not None:
            entry["graph_artifacts"] = sorted(
                {a for card in chunk for a in served_by.get(int(card["step"]), ())}
            )
        windows.append(entry)
    steps = []
    for card in ordered:
        step, forecasts = int(card["step"]), int(card.get("forecasts", 0))
        unknown = int(card.get("unknown", 0))
        entry = {"step": step, "forecasts": forecasts, "unknown": unknown,
                 "oov_rate": unknown / forecasts if forecasts else 0.0}  # fmt: skip
        if step in dates:
            entry["date"] = dates[step]
        steps.append(entry)
    return {
        "window": window,
        "windows": windows,
        "overall": _by_forecaster(ordered) if ordered else {},
        "steps": steps,
    }


def _by_forecaster(cards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The pipeline's rolling scorecard and, for each yardstick every card carries, its own."""
    found = {PIPELINE: _compact(rolling(cards))}
    names = set.intersection(*(set(card.get("yardsticks") or {}) for card in cards))
    for name in sorted(names):
        found[name] = _compact(rolling([card["yardsticks"][name] for card in cards]))
    return found


def _compact(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A rolling scorecard without its list of steps (the window already says them)."""
    return {key: value for key, value in summary.items() if key != "steps"}
