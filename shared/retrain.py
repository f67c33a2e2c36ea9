"""``geopol retrain``: build the next generation of artifacts from the growing store, then serve it.

Generation N+1 (shared/generations.py) is the bootstrap's model chain (shared/bootstrap.py
``model_steps``) written under ``RUN_DIR/generations/N+1/``: the event store exported as a
benchmark folder, the graph model trained on it **warm-started from generation N**
(``train graph --init-from``: known entities keep their rows, new ones get fresh rows, and the
manifest records both vocabulary sizes), its exports, the LLM adapters trained on its answers,
and the calibrator fitted on their scores. Each step is the ``geopol`` command a person would
type, run as a child process, so serving goes on in the stage processes. Only when the whole chain
has succeeded is the pointer moved (``generations.promote``); the stages pick it up at the next
step boundary.

A run killed halfway changes nothing served, and the next run resumes the chain where it stopped:
the steps already done are current and skipped, and the store export of the cut run is kept (it
is not redone because the store grew since), so the chain finishes on the data it began with.

``--watch`` (what ``geopol pipeline up`` runs under supervisord when ``retrain.every_steps`` is
set) checks every ``retrain.poll_s`` seconds how many steps have closed since the served
generation's data ends, and retrains when that reaches ``retrain.every_steps``. What it is doing
is written to ``RUN_DIR/generations/retrain.json``, which ``geopol status`` shows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from shared import generations
from shared.atomic import atomic_write_text
from shared.bootstrap import BootstrapError, Runner, bootstrap, geopol, model_steps
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.event_store import EventStore, StoreError
from shared.tkg_dataset import load_tkg

STATE_FILE = "retrain.json"
BUILDING_FILE = "building.json"  # the store step a generation's chain began from
MAX_ERROR_CHARS = 500


class RetrainError(RuntimeError):
    """The next generation cannot be built; the message says why."""


@dataclass(frozen=True)
class RetrainState:
    """What the retrainer last did, for ``geopol status`` (times are Unix seconds)."""

    state: str  # "waiting" | "building" | "failed"
    served: int
    steps_since: int | None = None
    every_steps: int | None = None
    building: int | None = None
    last_error: str | None = None
    updated_at: float = 0.0


def state_path(config: Config) -> Path:
    return generations.root(config) / STATE_FILE


def write_state(config: Config, state: RetrainState) -> None:
    path = state_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(state), indent=2) + "\n")


def read_state(config: Config) -> RetrainState | None:
    """The retrainer's last state, or None when it never ran (or the file is unreadable)."""
    try:
        return RetrainState(**json.loads(state_path(config).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def open_store(config: Config) -> EventStore:
    if not (config.store_dir / "store.json").is_file():
        raise RetrainError(f"no event store at {config.store_dir}: ingest something first")
    return EventStore(config.store_dir, step_minutes=config.ingest.mapping.step_minutes)


def data_through(served: generations.Generation) -> int:
    """The last step the served generation's data holds: recorded for a retrained one, read
    from the benchmark folder generation 0 was trained on otherwise."""
    if served.store_through is not None:
        return served.store_through
    dataset = load_tkg(served.dataset)
    return max(int(split[:, 3].max()) for split in dataset.splits.values() if len(split))


def steps_since(config: Config, served: generations.Generation) -> int:
    """How many steps have closed in the store since the served generation's data ends."""
    closed = open_store(config).closed_through
    return 0 if closed is None else max(0, closed - data_through(served))


def _began_from(config: Config, target: generations.Generation) -> int:
    """The closed step the chain of ``target`` began from: recorded when it first starts, so a
    resumed chain records the data it was really built on."""
    path = generations.root(config) / str(target.number) / BUILDING_FILE
    if path.is_file():
        return int(json.loads(path.read_text())["store_through"])
    through = open_store(config).closed_through
    if through is None:
        raise RetrainError(f"event store {config.store_dir} has no closed step to train on")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"store_through": through}) + "\n")
    return through


def build_next(
    config: Config,
    config_path: Path,
    runner: Runner = geopol,
    say: Callable[[str], None] = print,
) -> generations.Generation:
    """Build generation N+1 (resuming a cut chain), promote it, and return it."""
    served = generations.current(config)
    number = served.number + 1
    through = _began_from(config, generations.generation(config, number))
    target = generations.generation(config, number, store_through=through)
    say(f"retrain: generation {number} from the store through step {through}, "
        f"warm-started from generation {served.number} ({served.graph})")  # fmt: skip
    bootstrap(
        model_steps(config, config_path, target, init_from=served.graph), runner=runner, say=say
    )
    generations.promote(config, target)
    say(f"retrain: generation {number} is served from the next step boundary")
    return target


def watch(
    config: Config,
    config_path: Path,
    every_steps: int,
    poll_s: float,
    runner: Runner = geopol,
    rounds: int | None = None,
) -> int:
    """Retrain whenever ``every_steps`` steps have closed since the served data; ``rounds``
    bounds the checks (None: until stopped). A failed chain is recorded and tried again at the
    next check, resuming where it stopped."""
    done = 0
    while rounds is None or done < rounds:
        write_state(config, _check(config, config_path, every_steps, runner))
        done += 1
        if rounds is None or done < rounds:
            time.sleep(poll_s)
    return 0


def _check(config: Config, config_path: Path, every_steps: int, runner: Runner) -> RetrainState:
    """One check of the watch: retrain when due; the state to record. A store not there yet (a
    live first start still backfilling) or a failed step is recorded, not raised: the program
    keeps running and the next check tries again."""
    served = generations.current(config)
    since: int | None = None
    try:
        since = steps_since(config, served)
        if since >= every_steps:
            write_state(config, RetrainState("building", served.number, since, every_steps,
                                             served.number + 1, updated_at=time.time()))  # fmt: skip
            served, since = build_next(config, config_path, runner), 0
    except (BootstrapError, RetrainError, StoreError, OSError, ValueError) as exc:
        print(f"retrain: {exc}", file=sys.stderr)
        return RetrainState("failed", served.number, since, every_steps, served.number + 1,
                            str(exc)[:MAX_ERROR_CHARS], time.time())  # fmt: skip
    return RetrainState("waiting", served.number, since, every_steps, updated_at=time.time())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geopol retrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument(
        "--watch",
        action="store_true",
        help="keep running: retrain every --every-steps closed steps (default: build the next "
        "generation now, then exit)",
    )
    parser.add_argument(
        "--every-steps", type=int, default=None, metavar="N",
        help="with --watch: closed steps between retrains (default retrain.every_steps)",
    )  # fmt: skip
    parser.add_argument(
        "--poll-s", type=float, default=None, metavar="S",
        help="with --watch: seconds between checks (default retrain.poll_s)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if not args.watch:
        build_next(config, args.config)
        return 0
    every = args.every_steps or config.retrain.every_steps
    if every is None:
        raise ConfigError(
            f"{args.config}: retrain.every_steps is not set; give --every-steps N to watch"
        )
    return watch(config, args.config, every, args.poll_s or config.retrain.poll_s)


if __name__ == "__main__":
    sys.exit(main())
