"""Generations of served artifacts: which graph, llm and calibrator the stages serve now.

Generation 0 is what ``geopol pipeline bootstrap`` builds, at the config's own paths.
``geopol retrain`` (shared/retrain.py) builds generation N+1 under
``RUN_DIR/generations/N+1/`` — the store's benchmark export, a graph model warm-started from
generation N, its exports, the LLM adapters and the calibrator — and only when every step of
that chain has succeeded does it write the pointer ``RUN_DIR/generations/current.json``
(atomically). A retrain killed halfway therefore changes nothing the stages read: they keep
serving generation N, and the next retrain resumes the chain.

The stages switch at a step boundary: the graph stage reads the pointer when a SNAPSHOT closes a
step, so every query of the next step is answered by one generation. Downstream, a message
names the upstream artifact that made it (``graph_artifact``, ``llm_artifact``), and the llm and
calibrate stages serve it with the generation built on that artifact (:class:`ByUpstream`), so
the queries in flight across the switch are each scored by one consistent chain: none is
refused, and none is answered twice (the calibrate ledger publishes an id once).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from shared.atomic import atomic_write_text
from shared.config import Config
from shared.manifest import read_versioned_json

FORMAT_VERSION = 1
POINTER = "current.json"
RECORD = "generation.json"
TRAIN_EXPORT = "train"
CALIBRATE_EXPORT = "calibrate-live"


class GenerationError(RuntimeError):
    """A generation pointer or record that cannot be read; the message names the file."""


@dataclass(frozen=True)
class Generation:
    """Where one generation's artifacts live, and the last closed store step it was built from
    (None for generation 0: the bootstrap's dataset says how far it reaches)."""

    number: int
    dataset: Path
    graph: Path
    embeddings: Path
    llm: Path
    scores: Path
    calibrator: Path
    store_through: int | None = None

    @property
    def train_export(self) -> Path:
        """The graph's answers to validation questions the LLM trains on."""
        return self.embeddings / TRAIN_EXPORT

    @property
    def live_export(self) -> Path:
        """The graph's live answers to test questions the calibrator is fitted on."""
        return self.embeddings / CALIBRATE_EXPORT

    def describe(self) -> dict[str, object]:
        """The fields a pointer or record holds (paths are derived from the number)."""
        return {
            "format_version": FORMAT_VERSION,
            "generation": self.number,
            "store_through": self.store_through,
        }


def root(config: Config) -> Path:
    """Where retrained generations and the pointer live."""
    return config.paths.run_dir / "generations"


def generation(config: Config, number: int, store_through: int | None = None) -> Generation:
    """The paths of generation ``number``: the config's own for 0, else its folder's."""
    if number == 0:
        return Generation(
            0,
            config.train_data,
            config.graph_artifact,
            config.embeddings_dir,
            config.llm_artifact,
            config.scores_dir,
            config.calibrator_artifact,
            store_through,
        )
    folder = root(config) / str(number)
    return Generation(
        number,
        folder / "dataset",
        folder / "regcn",
        folder / "embeddings",
        folder / "llm",
        folder / "scores",
        folder / "calibrate",
        store_through,
    )


def _read(path: Path, config: Config) -> Generation:
    document = read_versioned_json(path, FORMAT_VERSION, f"generation file {path}", GenerationError)
    number, through = document.get("generation"), document.get("store_through")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise GenerationError(f"{path}: 'generation' must be an integer >= 1, got {number!r}")
    if through is not None and (not isinstance(through, int) or isinstance(through, bool)):
        raise GenerationError(f"{path}: 'store_through' must be a step or null, got {through!r}")
    return generation(config, number, through)


def current(config: Config) -> Generation:
    """The generation the stages serve: the pointer's, or 0 before any retrain finished."""
    pointer = root(config) / POINTER
    return _read(pointer, config) if pointer.is_file() else generation(config, 0)


def finished(config: Config) -> list[Generation]:
    """Every generation a message may still name, the served one first, then newest first: each
    retrained one whose record was written (its chain finished), and generation 0."""
    served = current(config)
    found = {served.number: served}
    folder = root(config)
    if folder.is_dir():
        for record in folder.glob(f"*/{RECORD}"):
            if record.parent.name.isdigit() and int(record.parent.name) not in found:
                found[int(record.parent.name)] = _read(record, config)
    found.setdefault(0, generation(config, 0))
    rest = sorted((n for n in found if n != served.number), reverse=True)
    return [served, *(found[n] for n in rest)]


def promote(config: Config, built: Generation) -> None:
    """Make ``built`` the served generation: its record first, then the pointer, each atomic."""
    text = json.dumps(built.describe(), indent=2) + "\n"
    folder = root(config) / str(built.number)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / RECORD, text)
    atomic_write_text(root(config) / POINTER, text)


class PointerWatch:
    """Tells a stage when the served generation changed, reading the pointer only when its file
    did (a stat per call: cheap enough for every step boundary)."""

    def __init__(self, config: Config, number: int) -> None:
        self.config = config
        self.number = number
        self._seen: tuple[int, int] | None = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = (root(self.config) / POINTER).stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def changed(self) -> Generation | None:
        """The newly promoted generation, or None when the served one is still the pointer's.
        It stays "changed" until :meth:`accept` is called, so a load that failed is retried."""
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        promoted = current(self.config)
        if promoted.number == self.number:
            self._seen = stamp
            return None
        return promoted

    def accept(self, served: Generation) -> None:
        """``served`` is loaded and serving; the pointer is read again when its file changes."""
        self.number = served.number
        self._seen = None


T = TypeVar("T")


class ByUpstream(Generic[T]):
    """What a downstream stage serves, per upstream artifact: the llm stage's scorer per graph
    artifact, the calibrate stage's calibration per llm artifact.

    A message names the upstream artifact that made it; one not held yet is looked up with
    ``find`` (which searches the finished generations, served first, and loads what is built on
    it) and kept, with at most ``keep`` held, the least recently used dropped. So the messages of
    the old generation still in flight after a switch are served by the old chain, and the new
    ones by the new chain, without a restart.
    """

    def __init__(
        self, upstream: str, served: T, find: Callable[[str], T | None], keep: int = 2
    ) -> None:
        self._held: OrderedDict[str, T] = OrderedDict({upstream: served})
        self.find = find
        self.keep = keep
        self.latest = upstream

    def get(self, upstream: str | None) -> T | None:
        """What serves messages made by ``upstream``, or None when no finished generation is
        built on it (the caller refuses the message, naming it)."""
        if upstream is None:
            return None
        held = self._held.get(upstream)
        if held is not None:
            self._held.move_to_end(upstream)
            return held
        found = self.find(upstream)
        if found is None:
            return None
        self._held[upstream] = found
        self.latest = upstream
        while len(self._held) > self.keep:
            self._held.popitem(last=False)
        return found

    def named_in(self, meta: Mapping[str, Any], key: str) -> T | None:
        """:meth:`get` for the upstream a message's meta names under ``key``."""
        upstream = meta.get(key)
        return self.get(upstream if isinstance(upstream, str) else None)

    @property
    def newest(self) -> T:
        """What was loaded last (for messages that name no upstream, such as abstentions)."""
        return self._held[self.latest]
