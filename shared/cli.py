"""The ``geopol`` command: one entry point, a subcommand per job.

Subcommands are imported only when chosen, so ``geopol --help`` is instant and a command never
imports a framework (torch, jax) it does not need.

Every subcommand runs inside one wrapper, :func:`run`: a failure prints one line,
``geopol CMD: <file/key/value>: <reason>``, and exits non-zero (2 for bad input, which is what
the project's own errors and ``OSError`` report; 1 for anything else, a bug); Ctrl-C prints
``geopol CMD: interrupted`` and exits 130. ``--debug`` (anywhere before a ``--``) or
``GEOPOL_DEBUG=1`` lets the exception through with its traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

# name -> (module with a ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("shared.doctor", "check that this machine can run the pipeline"),
    "simulate": ("services.ingest.simulator.cli", "write a simulated GDELT 2.0 world to files"),
    "ingest": ("services.ingest.cli", "load GDELT exports into the event store"),
    "ingest backfill": (
        "services.ingest.backfill_cli",
        "fetch and ingest the last N days of live GDELT 2.0 (a first live start's history)",
    ),
    "ingest tkg": (
        "services.ingest.tkg_cli",
        "load a temporal-KG benchmark (ICEWS14, ...) into an event store with its own ids",
    ),
    "dataset": (
        "services.ingest.datasets",
        "build benchmark folders: gdelt-georgia from GDELT, from-store from the event store",
    ),
    "eval": ("services.graph.evaluate", "evaluate every ranking method on a benchmark folder"),
    "eval-baselines": ("services.graph.baselines", "frequency and recurrency baselines (ranking)"),
    "pipeline": ("shared.pipeline", "start, stop or restart the stage processes"),
    "serve": ("shared.serve", "run one stage in the foreground"),
    "retrain": (
        "shared.retrain",
        "build the next generation of artifacts from the grown store; the stages switch to it",
    ),
    "replay": (
        "shared.replay",
        "replay a GDELT dataset a day at a time through the pipeline; online scorecard",
    ),
    "status": ("shared.status", "show each stage's liveness and counters"),
    "keys": ("shared.keys", "make a CurveZMQ key pair for a stage or client (multi-host)"),
    "bench": ("shared.bench.cli", "run benchmarks into reports/bench.json"),
    "export embeddings": ("services.graph.export", "per-query graph embeddings for LLM training"),
    "export influence": (
        "services.graph.influence_cli",
        "score an export's questions by influence on the graph surrogate's validation loss",
    ),
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
    "eval online": (
        "services.calibrate.online_cli",
        "the pipeline's resolved forecasts as a windowed online scorecard (with recurrency)",
    ),
    "llm prompt": ("services.llm.prompt_cli", "print one exported question as the LLM sees it"),
    "llm select": (
        "services.llm.select_cli",
        "show the training questions a selection (random, influence, loss-band) chooses",
    ),
    "llm score": ("services.llm.score_cli", "save every candidate's scores for calibration"),
    "eval llm": ("services.llm.evaluate", "tgl-mcq and live accuracy of LLM methods and baselines"),
}

GROUPS = {"bench", "dataset", "pipeline", "serve"}
"""Commands whose next word names what they do (``geopol serve ingest``): part of CMD in a
failure's line."""
DEBUG_FLAG = "--debug"
DEBUG_ENV = "GEOPOL_DEBUG"
BAD_INPUT = 2
BUG = 1
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
PROJECT_PACKAGES = {"shared", "services"}
"""An exception class defined in these packages was raised on purpose, with a message written
for a person (it names the file, key or value): bad input, not a bug."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol",
        description="Geopol: forecasting geopolitical events from GDELT with a temporal graph "
        "model and an LLM. Run `geopol COMMAND --help` for a command's options.",
        epilog="A command that fails prints one line, `geopol COMMAND: <file/key/value>: "
        "<reason>`, and exits 2 on bad input (1 on a bug); Ctrl-C stops a one-shot command "
        "with one line and exit 130 (a stage under `geopol serve` and `geopol watch` stop "
        f"gracefully instead). {DEBUG_FLAG} (before or after COMMAND) or {DEBUG_ENV}=1 in the "
        "environment shows the Python traceback instead.",
    )
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help="on a failure, show the Python traceback"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def one_line(exc: BaseException) -> str:
    """The exception's message on one line: its lines joined, the first by ``: ``, the rest by
    ``; `` (a config error lists one bad key a line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] + (": " + "; ".join(lines[1:]) if len(lines) > 1 else "")


def _is_bad_input(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in PROJECT_PACKAGES


def _is_native_interrupt(exc: BaseException) -> bool:
    """Ctrl-C that landed while native code (polars, via pyo3) was calling back into Python: pyo3
    turns the KeyboardInterrupt into a ``PanicException`` (a BaseException) naming it."""
    return type(exc).__name__ == "PanicException" and "KeyboardInterrupt" in str(exc)


def run(name: str, command: Callable[[list[str]], int | None], argv: list[str], debug: bool) -> int:
    """``command(argv)``'s exit code; a failure or Ctrl-C is one line on stderr, not a traceback
    (unless ``debug``)."""
    try:
        return int(command(argv) or 0)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt) or _is_native_interrupt(exc)
        if debug or not (interrupted or isinstance(exc, Exception)):
            raise
        if interrupted:
            print(f"geopol {name}: interrupted", file=sys.stderr)
            return INTERRUPTED
        if _is_bad_input(exc):
            print(f"geopol {name}: {one_line(exc)}", file=sys.stderr)
            return BAD_INPUT
        print(
            f"geopol {name}: internal error, {type(exc).__name__}: {one_line(exc)} "
            f"(run again with {DEBUG_FLAG} for the traceback)",
            file=sys.stderr,
        )
        return BUG


def _split_debug(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether ``--debug`` is given (before any ``--``) or ``GEOPOL_DEBUG`` is set, and argv
    without the flag."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != DEBUG_FLAG]
    flag = len(head) < end
    return flag or os.environ.get(DEBUG_ENV, "") not in {"", "0"}, head + argv[end:]


def main(argv: list[str] | None = None) -> int:
    debug, argv = _split_debug(sys.argv[1:] if argv is None else argv)
    two_words = " ".join(argv[:2])  # e.g. "train graph"
    if two_words in COMMANDS:
        name, rest = two_words, argv[2:]
    else:
        name, rest = (argv[0] if argv else ""), argv[1:]
    if name not in COMMANDS:
        _parser().parse_args(argv or ["--help"])  # prints help or the "invalid choice" error
        return 2
    shown = f"{name} {rest[0]}" if name in GROUPS and rest and not rest[0].startswith("-") else name

    def command(args: list[str]) -> int | None:
        return importlib.import_module(COMMANDS[name][0]).main(args)  # import errors count too

    return run(shown, command, rest, debug)


if __name__ == "__main__":
    sys.exit(main())
