"""Reliability diagram: top-1 confidence against accuracy, the confidence histogram under it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.prob_metrics import ECE_BINS, ece, reliability


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, title: str
) -> Path:
    """One line per named ``(probabilities, truths)`` pair; bars count the forecasts per bin."""
    import matplotlib  # only here: fitting and serving never draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    width = 1.0 / ECE_BINS
    for i, (name, (probs, truth)) in enumerate(curves.items()):
        bins = reliability(probs, truth)
        used = bins.count > 0
        top.plot(
            bins.confidence[used],
            bins.accuracy[used],
            "o-",
            label=f"{name} (ECE {ece(probs, truth):.3f})",
        )
        offset = (i - (len(curves) - 1) / 2) * width / len(curves)
        bottom.bar(
            bins.edges[:-1] + width / 2 + offset,
            bins.count,
            width=width / len(curves),
            label=name,
        )
    top.set(ylabel="accuracy of the top pick", title=title, xlim=(0, 1), ylim=(0, 1))
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlabel="top-1 probability", ylabel="forecasts")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
