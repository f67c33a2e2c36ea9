"""``geopol eval llm``: the tgl-mcq and live rows of reports/eval.json for LLM methods and the
graph's own baselines, every method on the same seeded sample and the same option orders.

- tgl-mcq at K = 4, 6, 10 from one K=10 export (gold + 9 recent-entity negatives; K < 10 keeps
  the gold and a random K-1 of them): ``recurrency`` and ``regcn`` pick the option with the best
  exported score, each LLM artifact the best letter logit.
- live (``--live EXPORT``, the graph's own top-K): recall@K of the retriever, and Hits@1 of
  ``regcn`` and of each LLM re-ranking those K candidates (a miss counts as wrong).
- every LLM method's score table (each candidate's LLM, graph and recurrency scores) is written
  under ``--scores`` (default RUN_DIR/scores/DATASET): what ``geopol eval calibrate`` measures.
- learning curves and the chosen recipe come from each artifact's manifest (its validation
  curve), ablations' curves included; ``--ablation NAME=ARTIFACT`` rows go under ``ablations``
  at the largest K of ``--ks``, scored on the first ``--ablation-n`` questions of the same seeded sample (variants
  trained on few questions are compared with each other, not with the full-size methods).

Ties (recurrency gives many candidates 0) are broken by the seeded option order, which is random,
so a tie costs what a random guess costs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from services.llm import artifact as llm_artifact
from services.llm import prompt_facts
from services.llm.backbone import BackboneError, pick_dtype, resolve
from services.llm.questions import option_positions
from services.llm.scoring import OptionScorer
from services.llm.tables import score_table
from services.llm.torch_process import configure_torch
from shared import eval_report
from shared import score_table as tables
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.embedding_export import ExportedSplit, ExportError, gold_rows, load_export

BASELINES = {"recurrency": "recurrency", "regcn": "scores"}
BATCH = 16


def sample_rows(export: ExportedSplit, n: int, seed: int, gold_only: bool = True) -> np.ndarray:
    """A seeded sample of ``n`` rows (rows with the gold among the candidates for tgl-mcq)."""
    pool = gold_rows(export) if gold_only else np.arange(len(export))
    return np.sort(np.random.default_rng(seed).permutation(pool)[: min(n, len(pool))])


def _orders(
    export: ExportedSplit, rows: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's options in letter order (candidate positions) and the gold's letter: the same
    orders the LLM sees, through the same function."""
    picks = [
        option_positions(
            int(export.arrays["gold_index"][r]), export.num_candidates, k, seed, int(r)
        )
        for r in rows
    ]
    return np.stack([p[0] for p in picks]), np.array([p[1] for p in picks])


def baseline_choice(
    export: ExportedSplit, rows: np.ndarray, array: str, order: np.ndarray
) -> np.ndarray:
    """The letter an exported score array picks (its best option in the presented order)."""
    return np.asarray(export.arrays[array])[rows[:, None], order].argmax(1)


def plot_learning_curves(report: Path, dataset: str) -> Path | None:
    """``learning-curve-DATASET.png`` beside eval.json: validation Acc against training
    questions for every method with a curve (what more data would buy)."""
    import matplotlib  # only here: every other command of this module runs without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = json.loads(report.read_text()).get(dataset, {}).get("learning_curve", {})
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in sorted(curves.items()):
        ax.plot(
            [p["train_questions"] for p in points], [p["acc"] for p in points], "o-", label=name
        )
    k = next(iter(curves.values()))[0]["K"]
    ax.axhline(1 / k, color="grey", linestyle=":", label=f"chance (1/{k})")
    ax.set(
        xscale="log",
        xlabel="training questions",
        ylabel=f"validation Acc@{k}",
        title=f"{dataset}: tgl-mcq learning curve",
    )
    ax.legend()
    out = report.parent / f"learning-curve-{dataset}.png"
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def load_scorer(config: Config, directory: Path) -> tuple[OptionScorer, llm_artifact.LlmArtifact]:
    checked = llm_artifact.check(directory)
    return load_checked(config, checked), checked


def load_checked(config: Config, checked: llm_artifact.LlmArtifact, **fits: Any) -> OptionScorer:
    """The scorer of an artifact already checked (its files are not hashed again), refused
    before the backbone loads unless it fits the backbone and ``fits`` (the graph artifact and
    dim of the export it will score, as :func:`llm_artifact.check_fits` takes them)."""
    source = resolve(config.llm.backbone, config.backbone_cache)
    llm_artifact.check_fits(checked, source, **fits)
    return llm_artifact.load(checked, source, pick_dtype(config.llm.dtype))


def _named(values: list[str]) -> dict[str, Path]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            raise ValueError(f"expected NAME=ARTIFACT, got {value!r}")
        out[name] = Path(path)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol eval llm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config (backbone, dtype)"
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="tgl-mcq K=10 export of the test split"
    )
    parser.add_argument("--live", type=Path, help="live K=10 export of the same split")
    parser.add_argument(
        "--method",
        action="append",
        default=[],
        metavar="NAME=ARTIFACT",
        help="an LLM method and its artifact (repeatable)",
    )
    parser.add_argument(
        "--ablation",
        action="append",
        default=[],
        metavar="NAME=ARTIFACT",
        help="an ablation row (at the largest --ks only)",
    )
    parser.add_argument(
        "--live-method",
        action="append",
        metavar="NAME",
        help="only these methods re-rank the live export (repeatable; default: every method)",
    )
    parser.add_argument("--n", type=int, default=2000, help="questions in the seeded sample")
    parser.add_argument(
        "--ablation-n",
        type=int,
        help="questions the ablation rows are scored on: the first of the same sample (default --n)",
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 6, 10], help="option counts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and option orders")
    parser.add_argument("--no-baselines", action="store_true", help="skip recurrency and regcn")
    parser.add_argument("--reports", type=Path, default=Path("reports/eval.json"))
    parser.add_argument(
        "--scores", type=Path, help="folder of the score tables (default RUN_DIR/scores/DATASET)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        configure_torch(config.llm)
        export = load_export(args.data)
        live = load_export(args.live) if args.live else None
        methods, ablations = _named(args.method), _named(args.ablation)
        for path in (*methods.values(), *ablations.values()):
            llm_artifact.check(path)  # every artifact is checked before any model loads
        results = evaluate(config, export, live, methods, ablations, args)
    except (
        ConfigError,
        ExportError,
        llm_artifact.LlmArtifactError,
        BackboneError,
        ValueError,
        OSError,
    ) as exc:
        print(f"geopol eval llm: {exc}", file=sys.stderr)
        return 2
    for line in results:
        print(line)
    return 0


def evaluate(
    config: Config,
    export: ExportedSplit,
    live: ExportedSplit | None,
    methods: dict[str, Path],
    ablations: dict[str, Path],
    args: argparse.Namespace,
) -> list[str]:
    dataset = export.manifest["dataset"]
    scores_dir = args.scores or config.paths.run_dir / "scores" / dataset
    rows = sample_rows(export, args.n, args.seed)
    lines = []
    note = f"sample of {len(rows)} {export.manifest['split']} questions (seed {args.seed}), graph artifact {export.manifest['graph_artifact'][:12]}"
    for k in args.ks:
        if args.no_baselines:
            break
        order, gold = _orders(export, rows, k, args.seed)
        entries: dict[str, Any] = {}
        for name, array in BASELINES.items():
            picks = baseline_choice(export, rows, array, order)
            entries[name] = {"acc": float((picks == gold).mean()), "n": int(len(rows))}
        eval_report.write_entries(dataset, ("tgl-mcq", f"K{k}"), entries, args.reports, notes=note)
        lines += [
            f"tgl-mcq K={k} {name}: {e['acc']:.4f} (n={e['n']})" for name, e in entries.items()
        ]
    ablation_rows = sample_rows(export, args.ablation_n or args.n, args.seed)
    for name, path in {**methods, **ablations}.items():
        scorer, checked = load_scorer(config, path)
        steps = checked.steps
        ks = args.ks if name in methods else [max(args.ks)]
        for k in ks:
            table = score_table(
                scorer,
                export,
                rows if name in methods else ablation_rows,
                k,
                steps,
                args.seed,
                BATCH,
                label=name,
                meta={"method": name, "llm_artifact": checked.artifact_id},
                facts=prompt_facts.source_for(config, scorer.style.facts),
            )
            tables.save(table, scores_dir / table_name(table))
            picks, gold = table.llm.argmax(1), table.gold
            entry = {"acc": float((picks == gold).mean()), "n": int(len(table))}
            section = ("tgl-mcq", f"K{k}") if name in methods else ("ablations",)
            value = entry if name in methods else {**entry, "K": k}
            sample = note if name in methods else _ablation_note(export, table, args.seed)
            recipe_note = f"{sample}; recipe {checked.manifest.get('recipe_name')!r}: {checked.manifest['recipe']}; trained on {checked.manifest['data']['questions']} questions, best validation at {checked.manifest['train']['best_questions']}"
            eval_report.write_entries(
                dataset, section, {name: value}, args.reports, notes=recipe_note
            )
            lines.append(f"{'/'.join(section)} {name}: {entry['acc']:.4f} (n={entry['n']})")
        curve = [
            {"train_questions": p["train_questions"], "acc": p["acc"], "K": p["K"]}
            for p in checked.manifest["train"]["curve"]
        ]
        if curve:
            eval_report.write_entries(
                dataset,
                ("learning_curve",),
                {name: curve},
                args.reports,
                notes=f"validation sample of {checked.manifest['train']['settings']['valid_questions']} questions",
            )
        if live is not None and name in methods and name in (args.live_method or methods):
            lines += _live(
                export_name=dataset,
                live=live,
                scorer=(scorer, checked.artifact_id, scores_dir),
                steps=steps,
                name=name,
                args=args,
            )
        del scorer
    figure = plot_learning_curves(args.reports, dataset)
    if figure is not None:
        lines.append(f"learning curves: {figure}")
    if live is not None and not args.no_baselines:
        lines += _live(
            export_name=dataset, live=live, scorer=None, steps=1, name="regcn", args=args
        )
    return lines


def _ablation_note(export: ExportedSplit, table: tables.ScoreTable, seed: int) -> str:
    """Where an ablation row was scored, with regcn's Acc on the same questions and options."""
    regcn = float((table.graph.argmax(1) == table.gold).mean())
    return (
        f"first {len(table)} questions of the seeded {export.manifest['split']} sample (seed "
        f"{seed}); regcn on them {regcn:.4f}"
    )


def table_name(table: tables.ScoreTable) -> str:
    """``SPLIT-PROTOCOL-K<k>-METHOD.safetensors``: one file per table, found by its parts."""
    m = table.meta
    return f"{m['split']}-{m['protocol']}-K{m['K']}-{m['method']}.safetensors"


def _live(
    export_name: str,
    live: ExportedSplit,
    scorer: tuple[OptionScorer, str, Path] | None,
    steps: int,
    name: str,
    args: argparse.Namespace,
) -> list[str]:
    """Hits@1 of re-ranking the graph's own top-K (misses count as wrong), and recall@K; an LLM
    (``scorer``: the model, its artifact id, the score-table folder) also saves its table."""
    rows = sample_rows(live, args.n, args.seed, gold_only=False)
    k = live.num_candidates
    gold_pos = np.asarray(live.arrays["gold_index"])[rows]
    recall = float((gold_pos >= 0).mean())
    if scorer is None:
        hits = float((gold_pos == 0).mean())  # the top-K is in the graph's order, best first
    else:
        model, artifact_id, scores_dir = scorer
        table = score_table(
            model,
            live,
            rows,
            k,
            steps,
            args.seed,
            BATCH,
            label=f"{name} live",
            meta={"method": name, "llm_artifact": artifact_id},
        )
        tables.save(table, scores_dir / table_name(table))
        hits = float(((table.llm.argmax(1) == table.gold) & (table.gold >= 0)).mean())
    entry = {"K": k, "recall@K": recall, "hits@1": hits, "n": int(len(rows))}
    eval_report.write_entries(
        export_name,
        ("live",),
        {name: entry},
        args.reports,
        notes=f"graph top-{k}, sample of {len(rows)} (seed {args.seed})",
    )
    return [f"live {name}: recall@{k} {recall:.4f} hits@1 {hits:.4f} (n={len(rows)})"]


if __name__ == "__main__":
    sys.exit(main())
