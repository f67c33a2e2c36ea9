"""The online scorecard over time as a PNG: Acc@1 and Brier per window, the OOV rate per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_online(report: dict[str, Any], out: Path, title: str) -> Path:
    """Acc@1 (top) and Brier (middle) of every forecaster per window, at the window's last step,
    and each step's OOV rate (bottom), from a :func:`services.calibrate.online.scorecards`
    report."""
    import matplotlib  # only here: serving never draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, brier, oov) = plt.subplots(
        3, 1, figsize=(7, 7), sharex=True, gridspec_kw={"height_ratios": [2, 2, 1]}
    )
    windows = report["windows"]
    ends = [w["last_step"] for w in windows]
    names = sorted({name for w in windows for name in w if isinstance(w[name], dict)})
    for name in names:
        for axis, key in ((acc, "acc@1"), (brier, "brier")):
            points = [(e, w[name][key]) for e, w in zip(ends, windows, strict=True)
                      if name in w and key in w[name]]  # fmt: skip
            if points:
                axis.plot(*zip(*points, strict=True), "o-", label=name)
    acc.set(ylabel="Acc@1", title=title, ylim=(0, 1))
    acc.legend(loc="upper left", fontsize=8)
    brier.set(ylabel="Brier (with other)")
    steps = report["steps"]
    oov.bar([s["step"] for s in steps], [s["oov_rate"] for s in steps], width=0.9, color="grey")
    oov.set(xlabel="step (window plotted at its last step)", ylabel="OOV rate")
    dated = {s["step"]: s["date"] for s in steps if "date" in s}
    if dated:  # label the ends of the windows with their dates
        ends = [w["last_step"] for w in windows]
        oov.set_xticks(ends, [dated.get(t, str(t)) for t in ends], rotation=30, ha="right")
        oov.set_xlabel("day (window plotted at its last day)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
