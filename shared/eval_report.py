"""Merge results into ``reports/eval.json`` and render ``reports/eval.md`` (every stage's numbers).

Layout (REPORTS.md): ``{dataset: {"ranking": {method: {"mrr", "hits@1", "hits@3", "hits@10",
"filter", "n_queries"}}, "tgl-mcq": {"K4": {method: {"acc", "n"}}, ...}, "live": {method: {...}},
"learning_curve": {method: [...]}, "ablations": {name: {...}}}}``. Ranking entries are written by
:func:`write_ranking`, every other section by :func:`write_entries`. Each method entry has a single ``filter`` field, so one entry holds
one filter: the plain method name (``recurrency``) holds the **time-aware filtered** figures,
the headline number of the literature, and ``<method>@raw`` (``recurrency@raw``) the raw ones.
The ``@`` keeps raw entries apart from method names that contain ``-raw`` (``llm-raw``).

A write replaces one method entry and keeps everything else (other methods, datasets and
sections such as ``tgl-mcq``). Read-modify-write runs under an exclusive lock on a file beside
the report, so two evaluations finishing together do not lose each other's entry, and every file
is replaced atomically (temporary file, then rename), so a crash never leaves half a report.

``eval.md`` is rendered from eval.json's ranking sections; the reproducing command and a note
per entry are kept in ``.eval-md.json`` beside it (REPORTS.md: every figure names the command
that reproduces it).
"""

from __future__ import annotations

import fcntl
import json
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.atomic import atomic_write_text

FILTERS = ("time-aware", "raw")
METRIC_KEYS = ("mrr", "hits@1", "hits@3", "hits@10")
RAW_SUFFIX = "@raw"


def method_key(method: str, filter_name: str) -> str:
    """The entry name of ``method`` under ``filter_name``: ``recurrency`` / ``recurrency@raw``."""
    if filter_name not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter_name!r}")
    return method if filter_name == "time-aware" else method + RAW_SUFFIX


def write_ranking(
    dataset: str,
    method: str,
    metrics: dict[str, Any],
    path: Path = Path("reports/eval.json"),
    *,
    command: str | None = None,
    notes: str | None = None,
) -> Path:
    """Store one ranking entry of ``dataset`` and re-render eval.md; returns the json path.

    ``metrics`` needs mrr, hits@1/3/10 (fractions), n_queries and filter; ``method`` must agree
    with the filter (``method_key``). ``command`` defaults to this process's command line.
    """
    entry = _ranking_entry(method, metrics)
    path = Path(path)
    with _locked(path):
        report = _load(path)
        report.setdefault(dataset, {}).setdefault("ranking", {})[method] = entry
        sidecar_path = path.parent / ".eval-md.json"
        sidecar = _load(sidecar_path)
        sidecar.setdefault(dataset, {})[method] = {
            "command": command or shlex.join(sys.argv),
            "notes": notes,
        }
        atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True) + "\n")
        atomic_write_text(sidecar_path, json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        atomic_write_text(path.with_suffix(".md"), render_markdown(report, sidecar))
    return path


def write_entries(
    dataset: str,
    section: tuple[str, ...],
    entries: dict[str, Any],
    path: Path = Path("reports/eval.json"),
    *,
    command: str | None = None,
    notes: str | None = None,
) -> Path:
    """Store ``entries`` (method -> value) under ``dataset`` / ``section`` (e.g. ``("tgl-mcq",
    "K10")``, ``("live",)``), replacing those methods only, and re-render eval.md."""
    if not section or section[0] == "ranking":
        raise ValueError("ranking entries go through write_ranking")
    path = Path(path)
    with _locked(path):
        report = _load(path)
        node = report.setdefault(dataset, {})
        for key in section:
            node = node.setdefault(key, {})
        node.update(entries)
        sidecar_path = path.parent / ".eval-md.json"
        sidecar = _load(sidecar_path)
        recorded = sidecar.setdefault(dataset, {})
        for method in entries:
            recorded["/".join((*section, method))] = {
                "command": command or shlex.join(sys.argv),
                "notes": notes,
            }
        atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True) + "\n")
        atomic_write_text(sidecar_path, json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        atomic_write_text(path.with_suffix(".md"), render_markdown(report, sidecar))
    return path


def _ranking_entry(method: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The REPORTS.md entry, checked: metric fractions in [0, 1], a known filter, n >= 1."""
    missing = [k for k in (*METRIC_KEYS, "filter", "n_queries") if k not in metrics]
    if missing:
        raise ValueError(f"ranking metrics for {method!r} lack {missing}")
    filter_name = metrics["filter"]
    if method_key(method.removesuffix(RAW_SUFFIX), filter_name) != method:
        raise ValueError(
            f"entry {method!r} cannot hold the {filter_name!r} filter (see method_key)"
        )
    entry: dict[str, Any] = {}
    for key in METRIC_KEYS:
        value = float(metrics[key])
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{method} {key}={value} is not a fraction in [0, 1]")
        entry[key] = value
    n = int(metrics["n_queries"])
    if n < 1:
        raise ValueError(f"{method}: n_queries must be >= 1, got {n}")
    entry.update(filter=filter_name, n_queries=n)
    return entry


def render_markdown(report: dict[str, Any], sidecar: dict[str, Any]) -> str:
    """eval.md: one ranking table per dataset, then the commands and notes behind its rows."""
    parts = ["# Geopol evaluation", ""]
    for dataset in sorted(report):
        parts += _ranking_section(dataset, report[dataset].get("ranking"), sidecar)
        parts += _other_sections(dataset, report[dataset], sidecar.get(dataset, {}))
    return "\n".join(parts)


def _ranking_section(
    dataset: str, ranking: dict[str, Any] | None, sidecar: dict[str, Any]
) -> list[str]:
    parts: list[str] = []
    if ranking:
        parts += [
            f"## {dataset}: ranking",
            "",
            "All entities ranked, single-step (history = the real past), object queries plus "
            "inverse-relation queries; ties broken at random in expectation. `@raw` rows are "
            "unfiltered; the others are time-aware filtered.",
            "",
            "| method | filter | MRR | Hits@1 | Hits@3 | Hits@10 | queries |",
            "|---|---|---|---|---|---|---|",
        ]
        for method in sorted(ranking, key=_row_order):
            m = ranking[method]
            parts.append(
                f"| {method} | {m['filter']} | {m['mrr']:.4f} | {m['hits@1']:.4f} | "
                f"{m['hits@3']:.4f} | {m['hits@10']:.4f} | {m['n_queries']} |"
            )
        parts += ["", *_provenance(ranking, sidecar.get(dataset, {})), ""]
    return parts


def _truth_cells(m: dict[str, Any], suffix: str = "") -> str:
    """The truth MAE and KL cells of a calibration row measured against the simulator's exact
    distribution (``geopol eval calibrate --truth``); nothing for one that was not."""
    if f"truth_mae{suffix}" not in m:
        return ""
    return f" {m[f'truth_mae{suffix}']:.4f} | {m[f'truth_kl{suffix}']:.4f} |"


def _other_sections(dataset: str, data: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """tgl-mcq (methods x K), live, learning curves and ablations, each with its commands."""
    parts: list[str] = []
    mcq = data.get("tgl-mcq") or {}
    if mcq:
        ks = sorted(mcq, key=lambda key: int(key.removeprefix("K")))
        methods = sorted({m for k in ks for m in mcq[k]})
        parts += [
            f"## {dataset}: tgl-mcq (Acc@K; gold + K-1 recent-entity negatives, options in "
            "seeded random order)",
            "",
            "| method | " + " | ".join(ks) + " | n |",
            "|---|" + "---|" * (len(ks) + 1),
        ]
        for method in methods:
            cells = [f"{mcq[k][method]['acc']:.4f}" if method in mcq[k] else "-" for k in ks]
            n = next(mcq[k][method]["n"] for k in ks if method in mcq[k])
            parts.append(f"| {method} | " + " | ".join(cells) + f" | {n} |")
        parts += ["", *_section_provenance(recorded, "tgl-mcq/"), ""]
    live = data.get("live") or {}
    if live:
        parts += [
            f"## {dataset}: live (candidates = the graph's own top-K)",
            "",
            "| method | K | recall@K | Hits@1 | Brier | ECE | NLL | n |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method, m in sorted(live.items()):
            probabilistic = " | ".join(_cell(m, key) for key in ("brier", "ece", "nll"))
            parts.append(
                f"| {method} | {m['K']} | {m['recall@K']:.4f} | {m['hits@1']:.4f} | "
                f"{probabilistic} | {m['n']} |"
            )
        parts += ["", *_section_provenance(recorded, "live/"), ""]
    for protocol, entry in sorted((data.get("calibration") or {}).items()):
        truth = "truth_n" in entry  # measured against the simulator's truth (--truth)
        parts += [
            f"## {dataset}: calibration, {protocol} K={entry['K']} (chosen: {entry['method']}, "
            f"n={entry['n']})",
            "",
            "| probabilities | ECE | Brier | NLL | Acc |" + (" truth MAE | truth KL |" * truth),
            "|---|---|---|---|---|" + ("---|---|" * truth),
            f"| before (softmax of the LLM logits) | {entry['ece_before']:.4f} | "
            f"{entry['brier_before']:.4f} | {entry['nll_before']:.4f} | - |"
            + _truth_cells(entry, "_before"),
        ]
        for name, m in entry["by_method"].items():
            parts.append(
                f"| {name} | {m['ece']:.4f} | {m['brier']:.4f} | {m['nll']:.4f} | {m['acc']:.4f} |"
                + _truth_cells(m)
            )
        if truth:
            parts += [
                "",
                "truth MAE and KL(truth || forecast): against the simulator's exact next-slot "
                f"distribution over the K candidates and `other`, on the {entry['truth_n']} "
                f"questions that have one ({entry['truth_missing']} without).",
            ]
        if "ece_floor" in entry:
            parts += [
                "",
                f"A perfectly calibrated forecast with the chosen calibrator's confidences would "
                f"still show ECE {entry['ece_floor']:.4f} on {entry['n']} questions from sampling "
                f"alone (95th percentile {entry['ece_floor_p95']:.4f}).",
            ]
        parts += [
            "",
            f"![reliability {protocol}](reliability-{dataset}-{protocol}.png)",
            "",
            *_section_provenance(recorded, f"calibration/{protocol}"),
            "",
        ]
    for label, entry in sorted((data.get("online") or {}).items()):
        parts += _online_section(dataset, label, entry, recorded)
    for title, key in (("learning curve", "learning_curve"), ("ablations", "ablations")):
        section = data.get(key) or {}
        if not section:
            continue
        parts += [
            f"## {dataset}: {title}",
            "",
            "| name | questions | K | Acc | n |",
            "|---|---|---|---|---|",
        ]
        for name, value in sorted(section.items()):
            for point in value if isinstance(value, list) else [value]:
                parts.append(
                    f"| {name} | {point.get('train_questions', '-')} | {point.get('K', '-')} | "
                    f"{point['acc']:.4f} | {point.get('n', '-')} |"
                )
        parts += ["", *_section_provenance(recorded, f"{key}/"), ""]
    return parts


def _online_section(
    dataset: str, label: str, entry: dict[str, Any], recorded: dict[str, Any]
) -> list[str]:
    """One replay's online scorecard: overall, then each window, pipeline beside each yardstick
    (``name`` Acc@1 / Brier / ECE / NLL), with recall@K, the OOV rate and n of the pipeline."""
    windows = [("overall", entry.get("overall") or {})] + [
        (f"{w.get('first_date', w['first_step'])}..{w.get('last_date', w['last_step'])}", w)
        for w in entry.get("windows", [])
    ]
    names = sorted(
        {n for _, w in windows for n, v in w.items() if isinstance(v, dict)},
        key=lambda n: (n != "pipeline", n),
    )
    head = " | ".join(f"{n} Acc@1 | {n} Brier | {n} ECE | {n} NLL" for n in names)
    parts = [
        f"## {dataset}: online scorecard, {label} (windows of {entry.get('window')} steps)",
        "",
        f"| steps | {head} | recall@K | OOV | n |",
        "|---|" + "---|---|---|---|" * len(names) + "---|---|---|",
    ]
    for span, w in windows:
        cells = [
            _cell(w.get(n, {}), key) for n in names for key in ("acc@1", "brier", "ece", "nll")
        ]
        mine = w.get("pipeline", {})
        parts.append(
            f"| {span} | " + " | ".join(cells) + f" | {_cell(mine, 'recall@K')} | "
            f"{_cell(mine, 'oov_rate')} | {mine.get('n', '-')} |"
        )
    if entry.get("plot"):
        parts += ["", f"![online {label}]({entry['plot']})"]
    return parts + ["", *_section_provenance(recorded, f"online/{label}"), ""]


def _cell(entry: dict[str, Any], key: str) -> str:
    return f"{entry[key]:.4f}" if key in entry else "-"


def _section_provenance(recorded: dict[str, Any], prefix: str) -> list[str]:
    return _provenance_lines([(k, v) for k, v in sorted(recorded.items()) if k.startswith(prefix)])


def _row_order(method: str) -> tuple[str, bool]:
    """Each method's time-aware row, then its raw row."""
    return method.removesuffix(RAW_SUFFIX), method.endswith(RAW_SUFFIX)


def _provenance(ranking: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    rows = [(m, recorded.get(m, {})) for m in sorted(ranking, key=_row_order)]
    return _provenance_lines(rows)


def _provenance_lines(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One bullet per distinct command (the rows it produced), then one per distinct note."""
    by_command: dict[str, list[str]] = {}
    notes: dict[str, None] = {}
    for row, info in rows:
        by_command.setdefault(info.get("command") or "(not recorded)", []).append(row)
        if info.get("notes"):
            notes[info["notes"]] = None
    lines = [f"- `{cmd}` -> {', '.join(names)}" for cmd, names in by_command.items()]
    return ["Reproduce:", "", *lines, *(f"- {note}" for note in notes)]


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock for the read-modify-write of ``path`` (released on exit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
