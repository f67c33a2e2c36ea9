"""The graph stage process: keep the recent history, answer each query with embeddings.

A thin loop (shared.runtime) around :class:`GraphStage`. A SNAPSHOT advances the history window;
a QUERY ``(s, r, ?, t)`` whose subject or relation the artifact has no embedding for (the
store's vocabulary grew after training) is answered with ABSTAIN (shared.abstention) and counted
(services.graph.oov); any other QUERY is answered on the ``embeddings`` socket with the five frames of
:mod:`shared.graph_frames`: the subject's T-step embeddings, the relation embedding, the model's
own top-K candidates (live protocol) with their T-step embeddings and scores, and the decoder's
query vector for ``(s, r)`` — and, when the training folder is there to tune it on, the recurrency
baseline's scores of the candidates; the meta holds the candidate ids and the lineage (graph artifact,
data cut-off). The T-step
embeddings are computed once per window state and cached, not once per query.

The answer is a pure function of the query, the event store and the artifact, so a re-sent query
gets the same answer again (DESIGN.md invariant 1: the publisher drops the duplicate). A query
whose history the window lacks (snapshot missed, or a fresh start) rebuilds the window from the
store first; a late query the window has moved past is answered from a separate history built
from the store, never from facts at or after its step.

That holds because late rows for a closed step are refused (the decision, and why, is "Closed
steps" in shared/event_store.py): ingest closes the store through a step before it sends the
step's snapshot or the next step's queries, so every step before a query's step says in the store
what its snapshot said, for good. A window fed by snapshots, one rebuilt from the store after a
restart and one built for a re-sent query therefore hold the same facts, and a snapshot at or
before the horizon (a copy sent again after an ingest restart, or one that arrives after a
rebuild covered its step) carries nothing new and is skipped.

The served generation (shared/generations.py) changes at a step boundary only: when a SNAPSHOT
closes a step, the stage first reads the generation pointer, and when ``geopol retrain`` has
promoted a new generation it loads that graph artifact (with its training folder, window and
recurrency baseline) and serves every later query with it. A generation that fails to load is
logged and the old one keeps serving; the next step boundary tries again.

This module imports no JAX: ``main`` sets the memory budget (``jax_env.configure``, invariant 3)
before the JAX modules are imported in :func:`build_stage`, and :class:`GraphStage` only calls
methods of the model and window it is given.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from services.graph import jax_env
from services.graph.artifact import ArtifactError, GraphArtifact, load, read_manifest
from services.graph.oov import OovCounter
from shared import generations
from shared.abstention import abstain
from shared.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from shared.event_store import EventStore, StoreError
from shared.ids import frame_to_ids
from shared.log import configure_logging, get_logger
from shared.manifest import vocab_sha256
from shared.protocol import Message, MessageType, new_message
from shared.runtime import Route, StageRuntime
from shared.tkg_dataset import TkgDataset, load_tkg

if TYPE_CHECKING:
    from services.graph.embeddings import GraphModel, WindowEmbeddings
    from services.graph.history import RecentWindow
    from services.graph.live_recurrency import StoreRecurrency

log = get_logger(__name__)
OUT = "embeddings"
ACCEPTS = {"queries": frozenset({MessageType.SNAPSHOT, MessageType.QUERY})}


@dataclass(frozen=True)
class ServedGraph:
    """What one generation serves: its model, a window sized to its vocabulary, and the
    recurrency baseline tuned on its training folder (None without that folder)."""

    graph_model: GraphModel
    window: RecentWindow
    recurrency: StoreRecurrency | None


Swap = Callable[[], ServedGraph | None]
"""Called at each step boundary: the newly promoted generation, loaded, or None for no change.
May raise (a broken artifact): the stage logs it and keeps what it serves."""


class GraphStage:
    """State and behaviour of the graph stage, independent of sockets."""

    def __init__(
        self,
        graph_model: GraphModel,
        window: RecentWindow,
        store: EventStore,
        candidates: int,
        recurrency: StoreRecurrency | None = None,
        late_steps: int = 8,
        oov: OovCounter | None = None,
        swap: Swap | None = None,
    ) -> None:
        self.oov = oov or OovCounter()
        self.store = store
        self.candidates = candidates
        self.late_steps = late_steps
        self.swap = swap
        self.serve(ServedGraph(graph_model, window, recurrency))

    def serve(self, served: ServedGraph) -> None:
        """Answer from now on with ``served``; nothing cached from another model is kept."""
        self.graph_model = served.graph_model
        self.window = served.window
        self.recurrency = served.recurrency
        self._cache: tuple[int, WindowEmbeddings] | None = None
        self._late: OrderedDict[int, WindowEmbeddings] = OrderedDict()

    def handle(self, _socket: str, message: Message) -> list[Route]:
        """SNAPSHOT: advance the window (no reply). QUERY: one EMBEDDINGS reply."""
        if message.type is MessageType.SNAPSHOT:
            self._on_snapshot(message)
            return []
        if message.type is MessageType.QUERY:
            return [(OUT, self._on_query(message))]
        raise ValueError(f"the graph stage does not handle {message.type} messages")

    # -- snapshots -------------------------------------------------------------------------
    def _on_snapshot(self, message: Message) -> None:
        """Advance the window; a snapshot at or before the horizon is already held (see the
        module docstring: a closed step never changes in the store)."""
        step = _int_meta(message.meta, "step")
        triples = _snapshot_triples(message)
        self._swap_at_boundary(step)
        horizon = self.window.horizon
        if horizon is not None and step <= horizon:
            log.debug("snapshot_already_seen", step=step, horizon=horizon)
            return
        cfg = self.graph_model.cfg
        self.oov.facts(triples, cfg.num_entities, cfg.num_relations)
        if self._missed_before(step):
            self.window.rebuild(self.store, before=step)
        self.window.advance(step, triples)
        log.info("snapshot_applied", step=step, facts=len(triples))

    def _swap_at_boundary(self, step: int) -> None:
        """Switch to a newly promoted generation, if there is one, before step ``step`` is
        applied: its window starts empty and is rebuilt from the store below."""
        if self.swap is None:
            return
        old = self.graph_model.artifact_id
        try:
            served = self.swap()
        except (OSError, ArtifactError, StoreError, ValueError, RuntimeError) as exc:
            log.error("generation_swap_failed", step=step, serving=old, reason=str(exc))
            return
        if served is not None:
            self.serve(served)
            log.info("generation_swapped", step=step, old=old, new=self.graph_model.artifact_id)

    def _missed_before(self, step: int) -> bool:
        """Whether the store holds a step between the horizon and ``step`` (or nothing is known)."""
        horizon = self.window.horizon
        return horizon is None or any(horizon < t < step for t in self.store.steps())

    # -- queries ---------------------------------------------------------------------------
    def _on_query(self, message: Message) -> Message:
        meta = message.meta
        step, subject, relation = (_int_meta(meta, key) for key in ("step", "subject", "relation"))
        fields = _query_fields(meta, step, subject, relation)
        unknown = self._unknown(subject, relation)
        self.oov.query(step, unknown)
        if unknown:  # ranked by a model that never saw it, the answer would be invented
            log.info("query_unknown_to_model", msg_id=message.id, step=step, unknown=unknown)
            return abstain(message, fields, unknown, graph_artifact=self.graph_model.artifact_id)
        emb = self._embeddings_for(step)
        candidates, frames = self.graph_model.live(emb, subject, relation, self.candidates)
        if self.recurrency is not None:  # the calibrator stacks it (shared.graph_frames)
            frames = [*frames, self.recurrency.scores(step, subject, relation, candidates)]
        return new_message(
            MessageType.EMBEDDINGS,
            message.id,
            frames,
            trace_id=message.trace_id,
            meta={
                **fields,
                "protocol": "live",
                "candidates": [int(c) for c in candidates],
                "graph_artifact": self.graph_model.artifact_id,
                "data_cutoff": emb.cutoff,
            },
        )

    def _unknown(self, subject: int, relation: int) -> list[str]:
        """Which of the query's ids the artifact has no embedding for (shared.abstention): ids
        the store gave after it was trained. Queries name store relations, never the model's
        inverse ones, so a relation id past the trained relations is new, not an inverse. A
        negative id is malformed, not new, and raises."""
        if subject < 0 or relation < 0:
            raise ValueError(f"query (s={subject}, r={relation}) has a negative id")
        cfg = self.graph_model.cfg
        sizes = {"subject": (subject, cfg.num_entities), "relation": (relation, cfg.num_relations)}
        return [field for field, (value, size) in sizes.items() if value >= size]

    def _embeddings_for(self, step: int) -> WindowEmbeddings:
        """The T-step embeddings from the history strictly before ``step``."""
        window = self.window
        if window.horizon is None or window.horizon < step - 1:
            window.rebuild(self.store, before=step)
        if window.last_step is not None and window.last_step >= step:
            return self._late_embeddings(step)
        if self._cache is None or self._cache[0] != window.version:
            self._cache = (window.version, self.graph_model.embed(window))
        return self._cache[1]

    def _late_embeddings(self, step: int) -> WindowEmbeddings:
        """A query behind the live window (a backlog after a restart, a re-send): the history
        before ``step`` is read from the store once per step and kept for the next ``late_steps``
        steps' queries, so a backlog of many queries per step costs one rebuild per step. The
        cache can never go stale: the store refuses rows for a closed step, and every step
        before a query's step was closed before the query existed."""
        found = self._late.get(step)
        if found is not None:
            self._late.move_to_end(step)
            return found
        log.info("late_query", step=step, window_last=self.window.last_step)
        past = self.window.fresh()
        past.rebuild(self.store, before=step)
        found = self.graph_model.embed(past)
        if self.late_steps:
            self._late[step] = found
            while len(self._late) > self.late_steps:
                self._late.popitem(last=False)
        return found


# Longest dataset name a reply carries on; ingest's names match [A-Za-z0-9_.-]+ and are short.
MAX_DATASET_CHARS = 128


def _query_fields(
    meta: Mapping[str, Any], step: int, subject: int, relation: int
) -> dict[str, Any]:
    """The query's fields the reply carries on, each checked and bounded.

    Only these, never the whole incoming meta: a reply header built from unbounded input would
    grow with the query's, and a query near the header limit would make an unsendable reply.
    Downstream reads dataset, step, subject and relation; ``attempt`` traces a re-send.
    """
    dataset = meta.get("dataset")
    if not isinstance(dataset, str) or len(dataset) > MAX_DATASET_CHARS:
        raise ValueError(
            f"meta field 'dataset' must be a string of at most {MAX_DATASET_CHARS} characters, "
            f"got {dataset!r:.80}"
        )
    fields = {"dataset": dataset, "step": step, "subject": subject, "relation": relation}
    if "attempt" in meta:
        fields["attempt"] = _int_meta(meta, "attempt")
    return fields


def _int_meta(meta: Mapping[str, Any], key: str) -> int:
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"meta field {key!r} must be an integer, got {value!r}")
    return value


def _snapshot_triples(message: Message) -> np.ndarray:
    """The snapshot's ``[n, 3]`` frame as int64 ids (ingest sends exactly one such frame)."""
    if len(message.frames) != 1 or message.frames[0].ndim != 2 or message.frames[0].shape[1] != 3:
        shapes = [list(frame.shape) for frame in message.frames]
        raise ValueError(f"a snapshot carries one [n, 3] frame, got {shapes}")
    return frame_to_ids(message.frames[0])


# --------------------------------------------------------------------------- process


def training_data(folder: Path) -> TkgDataset | None:
    """The benchmark folder the graph artifact was trained on, read once for the checks below and
    the recurrency frame; None when it cannot be read (said in the log, naming the folder): the
    frame is then off and a store smaller than the artifact's vocabulary goes unverified."""
    try:
        return load_tkg(folder)
    except (OSError, ValueError) as exc:  # TkgFormatError is a ValueError
        log.warning("recurrency_frame_off", data=str(folder), reason=str(exc))
        return None


def load_artifact(directory: Path, training: TkgDataset | None) -> GraphArtifact:
    """The graph artifact (manifest and hashes checked, numpy only), and, when the training folder
    is there, checked to be trained on that folder's vocabulary with its entity/relation counts."""
    if training is None:
        return load(directory)
    data = read_manifest(directory)["data"]
    for field, names in (
        ("entities_sha256", training.entity_names),
        ("relations_sha256", training.relation_names),
    ):
        if vocab_sha256(names) != data[field]:
            raise ArtifactError(
                f"training folder {training.directory} is not the data graph artifact {directory} "
                f"was trained on: data.{field} in its manifest differs from the folder's vocabulary"
            )
    return load(directory, num_entities=training.num_entities, num_relations=training.num_relations)


def check_vocabulary(
    store: EventStore, manifest: dict[str, Any], training: TkgDataset | None, folder: Path
) -> None:
    """Refuse a store whose ids are not the artifact's (invariant 4): embeddings would silently
    belong to other entities. A store holding the artifact's whole vocabulary is checked by hash;
    a smaller one (a fresh pipeline whose store is still growing) name by name against
    ``training``, the folder :func:`load_artifact` matched to the artifact. When that folder
    (``folder``) could not be read, a smaller store goes unverified, and the log says so."""
    data = manifest["data"]
    entities, relations = store.entities.keys(), store.relations.keys()
    if len(entities) >= data["num_entities"] and len(relations) >= data["num_relations"]:
        found = (
            vocab_sha256(entities[: data["num_entities"]]),
            vocab_sha256(relations[: data["num_relations"]]),
        )
        if found != (data["entities_sha256"], data["relations_sha256"]):
            raise ArtifactError(
                f"event store {store.root}: its first {data['num_entities']} entities / "
                f"{data['num_relations']} relations are not the vocabulary the graph artifact was "
                "trained on (vocabulary sha256 differs)"
            )
    elif training is not None:
        _check_prefix(store, "entity", entities, training.entity_names)
        _check_prefix(store, "relation", relations, training.relation_names)
    else:
        log.warning(
            "vocabulary_unverified",
            store_entities=len(entities),
            store_relations=len(relations),
            missing_data=str(folder),
        )


def _check_prefix(store: EventStore, what: str, stored: list[str], names: list[str]) -> None:
    """The store's keys are the training vocabulary's names, in id order, as far as both go."""
    for key_id, (found, expected) in enumerate(zip(stored, names, strict=False)):
        if found != expected:
            raise ArtifactError(
                f"event store {store.root}: {what} id {key_id} is {found!r}, but {expected!r} in "
                "the vocabulary the graph artifact was trained on"
            )


def build_stage(config: Config) -> GraphStage:
    """Load and check the served generation, then start JAX. Call only after
    ``jax_env.configure``. The stage swaps to a generation ``geopol retrain`` promotes later."""
    served = generations.current(config)
    store = EventStore(config.store_dir, step_minutes=config.ingest.mapping.step_minutes)
    first = load_served(config, served, store)
    watch = generations.PointerWatch(config, served.number)

    def swap() -> ServedGraph | None:
        promoted = watch.changed()
        if promoted is None:
            return None
        loaded = load_served(config, promoted, store)
        watch.accept(promoted)
        return loaded

    return GraphStage(
        first.graph_model, first.window, store, config.graph.candidates, first.recurrency,
        config.graph.late_steps, swap=swap,
    )  # fmt: skip


def load_served(config: Config, served: generations.Generation, store: EventStore) -> ServedGraph:
    """One generation's graph artifact, checked against its training folder and the store."""
    training = training_data(served.dataset)
    artifact = load_artifact(served.graph, training)
    check_vocabulary(store, artifact.manifest, training, served.dataset)

    from services.graph.embeddings import GraphModel  # JAX starts here, after configure
    from services.graph.history import RecentWindow

    graph_model = GraphModel.from_artifact(artifact)
    cfg = graph_model.cfg
    window = RecentWindow(
        cfg.num_entities,
        cfg.num_relations,
        cfg.history,
        config.graph.steps,
        config.graph.min_bucket,
    )
    log.info(
        "graph_model_loaded",
        artifact=graph_model.artifact_id,
        generation=served.number,
        steps=config.graph.steps,
    )
    recurrency = live_recurrency(training, store, cfg.num_entities, cfg.num_relations)
    return ServedGraph(graph_model, window, recurrency)


def live_recurrency(
    training: TkgDataset | None, store: EventStore, num_entities: int, num_relations: int
) -> StoreRecurrency | None:
    """The recurrency baseline tuned on the training folder's valid split, as the export tunes
    it, so the served frame is the feature the calibrator was fitted on; None (no frame, said in
    the log by :func:`training_data`) when that folder is not there."""
    if training is None:
        return None
    from services.graph.baselines import Benchmark, tune_recurrency
    from services.graph.live_recurrency import StoreRecurrency

    params = tune_recurrency(Benchmark.from_dataset(training), "valid")
    log.info("recurrency_tuned", data=str(training.directory), params=params.describe())
    return StoreRecurrency(store, params, num_entities, num_relations)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geopol serve graph", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        jax_env.configure(config.graph.mem_fraction)  # before anything imports jax
        configure_logging("graph", config.logging.level, config.logging.format)
        stage = build_stage(config)
    except (OSError, ArtifactError, ConfigError, StoreError, RuntimeError, ValueError) as exc:
        print(f"geopol serve graph: {exc}", file=sys.stderr)
        return 2
    runtime = StageRuntime("graph", config, stage.handle, accepts=ACCEPTS)
    stage.oov = OovCounter(runtime.metrics.registry)  # unknown ids on the metrics endpoint
    return runtime.run()


if __name__ == "__main__":
    sys.exit(main())
