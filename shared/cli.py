"""The ``geopol`` command: one entry point, a subcommand per job.

Subcommands are imported only when chosen, so ``geopol --help`` is instant and a command never
imports a framework (torch, jax) it does not need.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with a ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("shared.doctor", "check that this machine can run the pipeline"),
    "simulate": ("services.ingest.simulator.cli", "write a simulated GDELT 2.0 world to files"),
    "ingest": ("services.ingest.cli", "load GDELT exports into the event store"),
    "dataset": (
        "services.ingest.datasets",
        "build benchmark folders: gdelt-georgia from GDELT, from-store from the event store",
    ),
    "eval": ("services.graph.evaluate", "evaluate every ranking method on a benchmark folder"),
    "eval-baselines": ("services.graph.baselines", "frequency and recurrency baselines (ranking)"),
    "pipeline": ("shared.pipeline", "start, stop or restart the stage processes"),
    "serve": ("shared.serve", "run one stage in the foreground"),
    "status": ("shared.status", "show each stage's liveness and counters"),
    "keys": ("shared.keys", "make a CurveZMQ key pair for a stage or client (multi-host)"),
    "bench": ("shared.bench.cli", "run benchmarks into reports/bench.json"),
    "export embeddings": ("services.graph.export", "per-query graph embeddings for LLM training"),
    "train graph": ("services.graph.train", "train RE-GCN on a dataset in RE-Net layout"),
    "train llm": (
        "services.llm.train_cli",
        "train the LLM stage (LoRA + graph adapters) on an export",
    ),
    "watch": ("services.calibrate.watch", "follow the published forecasts (table or JSON)"),
    "train calibrate": (
        "services.calibrate.train_cli",
        "fit the calibrators on validation score tables",
    ),
    "eval calibrate": (
        "services.calibrate.evaluate",
        "ECE, Brier and NLL of the calibrator on test score tables",
    ),
    "llm prompt": ("services.llm.prompt_cli", "print one exported question as the LLM sees it"),
    "llm score": ("services.llm.score_cli", "save every candidate's scores for calibration"),
    "eval llm": ("services.llm.evaluate", "tgl-mcq and live accuracy of LLM methods and baselines"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol",
        description="Geopol: forecasting geopolitical events from GDELT with a temporal graph "
        "model and an LLM. Run `geopol COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    two_words = " ".join(argv[:2])  # e.g. "train graph"
    if two_words in COMMANDS:
        name, rest = two_words, argv[2:]
    else:
        name, rest = (argv[0] if argv else ""), argv[1:]
    if name not in COMMANDS:
        _parser().parse_args(argv or ["--help"])  # prints help or the "invalid choice" error
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
