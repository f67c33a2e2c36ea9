"""Resumable training checkpoints: the whole train state and the loop's progress, every epoch.

Why: on a CPU one ICEWS14 epoch takes minutes and an ICEWS05-15 epoch about an hour, longer than
a process (or a working session) may live. ``geopol train graph --resume`` continues a run from
its last finished epoch *exactly*: same Adam moments, same step counter (dropout keys are folded
from it), same shuffler state, same best-so-far and patience count. Ten epochs and a resume for
ten more equal one run of twenty.

Layout, inside the artifact folder (the artifact loader ignores it)::

    checkpoint/state-NNNN.safetensors  every array leaf of the train state after NNNN epochs,
                                       named by its pytree path
    checkpoint/progress.json           epochs done, best so far, per-epoch records, shuffler
                                       state, configs, data fingerprints, which state file
                                       holds the arrays and its sha256

A save writes the new state file beside the old one, then replaces progress.json atomically,
then removes the old state file: a process killed at any point leaves a checkpoint that loads.

No pickle: arrays go to safetensors, everything else to JSON. A progress file with a missing,
unknown or mistyped field, or whose state file is not a plain name inside the checkpoint folder,
is a :class:`CheckpointError` naming the field. :func:`load` refuses a checkpoint
of other data or other settings (only ``epochs`` and ``patience`` may change between legs),
one whose state file changed after saving, and one whose arrays do not match the shapes and
dtypes of the state the trainer built, each with a message naming the field and both values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
from safetensors import numpy as st_numpy

from shared.atomic import atomic_write_bytes
from shared.manifest import Fields, differences, read_versioned_json, read_with_sha256

DIRECTORY = "checkpoint"
PROGRESS_FILE = "progress.json"
FORMAT_VERSION = 2
RESUMABLE_CHANGES = frozenset({"epochs", "patience"})
"""Train settings a resumed leg may change; where it started from is not compared but kept."""
_NOT_COMPARED = RESUMABLE_CHANGES | {"init_from", "init_vocabulary"}

State = TypeVar("State")


class CheckpointError(ValueError):
    """No checkpoint, or one that cannot continue this run; the message says which field."""


@dataclass
class RunProgress:
    """Where a training run stands after ``epochs_done`` epochs (everything but the arrays).

    ``finished`` is set when the loop ended (epochs used up or early stop), not when the process
    was cut short, so ``geopol eval`` knows whether to reuse the artifact or resume the run.
    """

    model_config: dict[str, Any]
    train_config: dict[str, Any]
    data: dict[str, Any]
    shuffler_state: dict[str, Any]
    epochs_done: int = 0
    best_mrr: float = -1.0
    best_epoch: int = -1
    best_valid: dict[str, dict[str, float]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


def path_in(out_dir: Path) -> Path:
    return Path(out_dir) / DIRECTORY


def exists(out_dir: Path) -> bool:
    return (path_in(out_dir) / PROGRESS_FILE).is_file()


def unfinished(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a run that was cut short (so its artifact is not the last word).

    A checkpoint folder whose progress file is missing or unreadable counts as cut short too:
    reusing the artifact beside it as if training had ended would be the silent mistake.
    """
    if not path_in(out_dir).is_dir():
        return False
    try:
        return not read_progress(out_dir).get("finished", False)
    except CheckpointError:
        return True


def read_progress(out_dir: Path) -> dict[str, Any]:
    """The progress document of the checkpoint in ``out_dir`` (configs, epochs, best so far)."""
    return _read_progress(path_in(out_dir))


def save(out_dir: Path, state: Any, progress: RunProgress) -> Path:
    """Write the state's arrays to a new file, point the progress file at it, drop the old one."""
    directory = path_in(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    state_file = f"state-{progress.epochs_done:04d}.safetensors"
    payload = st_numpy.save(_named_leaves(jax.device_get(state)))
    atomic_write_bytes(directory / state_file, payload)
    _write_progress(directory, progress, state_file, hashlib.sha256(payload).hexdigest())
    for old in directory.glob("state-*.safetensors"):
        if old.name != state_file:
            old.unlink()
    return directory


def finish(out_dir: Path, progress: RunProgress) -> None:
    """Mark the run finished: rewrite only the progress file; the last state file stays."""
    directory = path_in(out_dir)
    saved = _read_progress(directory)
    _write_progress(directory, progress, saved["state_file"], saved["state_sha256"])


def _write_progress(directory: Path, progress: RunProgress, state_file: str, sha: str) -> None:
    document = {
        "format_version": FORMAT_VERSION,
        "state_file": state_file,
        "state_sha256": sha,
        **asdict(progress),
    }
    atomic_write_bytes(directory / PROGRESS_FILE, json.dumps(document, indent=1).encode("utf-8"))


def load(out_dir: Path, template: State, expected: RunProgress) -> tuple[State, RunProgress]:
    """The saved state (shaped like ``template``) and progress, after checking they fit this run.

    ``expected`` carries this run's configs and data fingerprints; its loop fields are ignored.
    The returned progress keeps the saved train settings but takes ``epochs`` and ``patience``
    from ``expected``, so a finished run can be extended.
    """
    directory = path_in(out_dir)
    document = _read_progress(directory)
    expected_json = _as_json(asdict(expected))
    _same(directory, "data", document["data"], expected_json["data"])
    _same(directory, "model_config", document["model_config"], expected_json["model_config"])
    saved_train = {k: v for k, v in document["train_config"].items() if k not in _NOT_COMPARED}
    wanted_train = {
        k: v for k, v in expected_json["train_config"].items() if k not in _NOT_COMPARED
    }
    _same(directory, "train_config", saved_train, wanted_train)
    payload = read_with_sha256(
        directory / document["state_file"],
        document["state_sha256"],
        PROGRESS_FILE,
        f"checkpoint {directory}",
        CheckpointError,
    )
    state = _restore(directory, st_numpy.load(payload), template)
    fields_ = {
        k: v
        for k, v in document.items()
        if k not in ("format_version", "state_file", "state_sha256")
    }
    changes = {k: v for k, v in expected.train_config.items() if k in RESUMABLE_CHANGES}
    progress = RunProgress(**{**fields_, "train_config": {**document["train_config"], **changes}})
    return state, progress


# --------------------------------------------------------------------------- internals


def _paths(tree: Any) -> list[tuple[str, Any]]:
    """``(name, leaf)`` pairs; names such as ``.opt_state[2][0].mu['entity']`` are stable."""
    return [
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def _named_leaves(tree: Any) -> dict[str, np.ndarray]:
    return {name: np.array(leaf, order="C") for name, leaf in _paths(tree)}  # keeps 0-d arrays 0-d


def _restore(directory: Path, arrays: dict[str, np.ndarray], template: State) -> State:
    expected = dict(_paths(template))
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {directory}: state arrays missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, spec in expected.items():
        found = arrays[name]
        if found.shape != np.shape(spec) or found.dtype != spec.dtype:
            raise CheckpointError(
                f"checkpoint {directory}: {name} is {found.dtype}{list(found.shape)} but this run "
                f"needs {spec.dtype}{list(np.shape(spec))}"
            )
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, [jax.device_put(arrays[n]) for n in expected])


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so comparisons are fair."""
    return json.loads(json.dumps(value))


_PROGRESS_TYPES: dict[str, type | tuple[type, ...]] = {
    "state_file": str,
    "state_sha256": str,
    "model_config": dict,
    "train_config": dict,
    "data": dict,
    "shuffler_state": dict,
    "epochs_done": int,
    "best_mrr": (int, float),
    "best_epoch": int,
    "best_valid": dict,
    "records": list,
    "finished": bool,
}
"""Every field of progress.json and its JSON type: what :func:`load` and ``geopol eval`` read."""


def _read_progress(directory: Path) -> dict[str, Any]:
    """progress.json after checking its format, that it holds exactly the known fields with
    their types, and that its state file is a plain name inside the checkpoint folder."""
    what = f"checkpoint {directory}"
    document = read_versioned_json(directory / PROGRESS_FILE, FORMAT_VERSION, what, CheckpointError)
    unknown = sorted(set(document) - set(_PROGRESS_TYPES) - {"format_version"})
    if unknown:
        raise CheckpointError(f"{what}: {PROGRESS_FILE} has unknown fields {unknown}")
    fields_ = Fields(document, PROGRESS_FILE, what, CheckpointError)
    for name, kind in _PROGRESS_TYPES.items():
        fields_.get(name, kind)
    fields_.file(directory, "state_file")
    train = fields_.section("train_config")
    for name in ("epochs", "patience", "seed"):
        train.get(name, int)
    model = fields_.section("model_config")
    for name in ("history", "dim", "num_blocks"):
        model.get(name, int)
    model.get("use_static", bool)
    return document


def _same(directory: Path, section: str, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse when any key of ``section`` differs, naming the first few keys and both values."""
    differing = differences(saved, wanted, ("saved", "now"))
    if differing:
        raise CheckpointError(
            f"checkpoint {directory} is of another run ({section} differs: "
            f"{'; '.join(differing[:3])}); train without --resume to start afresh"
        )
