"""``geopol export embeddings``: the graph stage's answers for a whole split, as files.

The LLM is trained on exactly what the graph stage will serve it, without ever importing JAX
(DESIGN.md invariant 3): this command walks a benchmark's time steps in order, keeps the same
:class:`~services.graph.history.RecentWindow` the service keeps (single-step protocol: the history
of step ``t`` is the real past before ``t``), and for every question ``(s, r, o, t)`` of the split
writes what an EMBEDDINGS message would carry, under one protocol:

- ``tgl-mcq`` (K in 4, 6, 10): gold plus K-1 negatives from the entities of the three steps
  before ``t``; a question with too few admissible negatives is skipped and counted;
- ``live``: the model's top-K, with the gold's position or -1 when the retriever missed it.

The folder's layout and its one checked reader (``load_export``) are
:mod:`shared.embedding_export`'s: the frames of :mod:`shared.graph_frames` per question (the
decoder's query vector included), the candidates' ids, the gold's position, the question, and
``recurrency``: the recurrency baseline's scores of the same candidates (its combined method,
tuned on the dataset's valid split, single-step like the graph), so the LLM can be compared with,
or given, a strong rule-free baseline. The manifest also holds the display names of entities and
relations (id order) and the calendar of the ``t`` column (:mod:`shared.calendar`), which is all a
prompt needs in words.

Questions are the split's distinct facts (with ``--inverse`` also ``(o, r + R, s, t)``), ordered
by ``t`` then ``(s, r, o)``; ``t`` is the step index ``t // time_step``, as the event store counts.
Arrays are filled through memory maps, so a large split never has to fit in memory. The manifest
is written last, atomically: it is the commit point of an export.

This module imports no JAX at import time; :func:`export_embeddings` imports it after ``main``
has set the memory budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from services.graph import jax_env
from services.graph.artifact import ArtifactError, load
from services.graph.baselines import Benchmark, RecurrencyScorer, tune_recurrency
from shared.atomic import atomic_write_text
from shared.calendar import calendar_of, coarsen
from shared.config import DEFAULT_CONFIG, load_config
from shared.embedding_export import (
    FORMAT_VERSION,
    KIND,
    MANIFEST,
    QUERY_COLUMNS,
    ExportError,
    array_layout,
    file_entry,
)
from shared.event_store import SPLITS
from shared.log import configure_logging
from shared.manifest import vocab_sha256
from shared.tkg_dataset import TkgDataset, TkgFormatError, display_names, load_tkg

if TYPE_CHECKING:
    from services.graph.embeddings import GraphModel
    from services.graph.history import RecentWindow

log = structlog.get_logger(__name__)

PROTOCOLS = ("tgl-mcq", "live")
MCQ_SIZES = (4, 6, 10)
#: The split the recurrency baseline's lambda and alpha are tuned on.
RECURRENCY_TUNING_SPLIT = "valid"


@dataclass(frozen=True)
class ExportRequest:
    """One split under one protocol; ``steps`` is T, ``k`` the number of candidates."""

    artifact: Path
    data: Path
    split: str
    protocol: str
    k: int
    out: Path
    steps: int = 3
    seed: int = 0
    inverse: bool = False
    min_bucket: int = 64

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ExportError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.protocol not in PROTOCOLS:
            raise ExportError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol == "tgl-mcq" and self.k not in MCQ_SIZES:
            raise ExportError(f"tgl-mcq asks K in {MCQ_SIZES}, got {self.k}")
        if self.k < 1 or self.steps < 1:
            raise ExportError(f"k and steps must be >= 1, got {self.k} and {self.steps}")


# --------------------------------------------------------------------------- questions


def step_questions(triples: np.ndarray, num_relations: int, inverse: bool) -> np.ndarray:
    """Distinct ``(s, r, o)`` of one step, with inverses if asked, sorted (groups by ``(s, r)``)."""
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    if inverse:
        flipped = triples[:, [2, 1, 0]] + np.array([0, num_relations, 0])
        triples = np.concatenate([triples, flipped])
    return np.unique(triples, axis=0)


def true_object_ranges(questions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each question, the row range of the sorted questions sharing its ``(s, r)``: their
    objects are all the true objects of ``(s, r, t)``, which tgl-mcq never offers as negatives."""
    subject, relation = questions[:, 0], questions[:, 1]
    key = subject * (int(relation.max(initial=0)) + 1) + relation  # sorted like the rows
    return np.searchsorted(key, key, side="left"), np.searchsorted(key, key, side="right")


def timeline(dataset: TkgDataset) -> Iterator[tuple[int, np.ndarray, str]]:
    """``(step, triples, split)`` for every time step of the dataset, in time order."""
    parts = [
        (facts[:, 3] // dataset.time_step, facts[:, :3], split)
        for split, facts in dataset.splits.items()
    ]
    steps = np.concatenate([p[0] for p in parts])
    triples = np.concatenate([p[1] for p in parts])
    splits = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    order = np.argsort(steps, kind="stable")
    for index in np.split(order, np.flatnonzero(np.diff(steps[order])) + 1):
        names = set(splits[index].tolist())
        if len(names) > 1:
            raise ExportError(f"{dataset.directory}: step {steps[index[0]]} is in {sorted(names)}")
        if names:  # empty only when the whole dataset is
            yield int(steps[index[0]]), triples[index], names.pop()


# --------------------------------------------------------------------------- writing


class _ArrayFile:
    """One ``.npy`` file filled row by row through a memory map; renamed into place at the end."""

    def __init__(self, path: Path, dtype: type, tail: tuple[int, ...], capacity: int) -> None:
        self.path = path
        self._tmp = path.with_name(f".{path.name}.tmp")
        self.rows = np.lib.format.open_memmap(
            self._tmp, mode="w+", dtype=dtype, shape=(capacity, *tail)
        )

    def finish(self, count: int) -> dict[str, Any]:
        """Keep the first ``count`` rows; returns the manifest entry of the file."""
        rows = self.rows
        rows.flush()
        if count < len(rows):
            np.save(self.path, rows[:count])
            del rows, self.rows
            self._tmp.unlink()
        else:
            del rows, self.rows
            os.replace(self._tmp, self.path)
        return file_entry(self.path)


class _ExportWriter:
    """The arrays of an export (``shared.embedding_export.array_layout``), one question at a time."""

    def __init__(self, out: Path, capacity: int, steps: int, k: int, dim: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)  # a half-written export must not load
        self.files = {
            name: _ArrayFile(out / f"{name}.npy", dtype, tail, capacity)
            for name, (dtype, tail) in array_layout(steps, k, dim).items()
        }
        self.count = 0

    def add(self, row: Mapping[str, Any]) -> None:
        """One question: a value for every array of the layout."""
        if row.keys() != self.files.keys():
            raise ExportError(f"an export row holds {sorted(self.files)}, got {sorted(row)}")
        for name, value in row.items():
            self.files[name].rows[self.count] = value
        self.count += 1

    def finish(self) -> dict[str, dict[str, Any]]:
        return {name: file.finish(self.count) for name, file in self.files.items()}


# --------------------------------------------------------------------------- export


def export_embeddings(request: ExportRequest) -> dict[str, Any]:
    """Write the export of ``request``; returns its manifest.

    Call only after ``jax_env.configure``: this is where the JAX modules are first imported.
    """
    dataset = load_tkg(request.data)
    artifact = load(
        request.artifact, num_entities=dataset.num_entities, num_relations=dataset.num_relations
    )
    _check_same_vocabulary(dataset, artifact.manifest)
    words = dataset_words(dataset)  # a bad label or calendar file fails before any work
    recurrency, recurrency_entry = _tuned_recurrency(dataset)

    from services.graph.embeddings import GraphModel  # JAX starts here, after configure
    from services.graph.history import RecentWindow

    graph_model = GraphModel.from_artifact(artifact)
    cfg = graph_model.cfg
    window = RecentWindow(
        cfg.num_entities, cfg.num_relations, cfg.history, request.steps, request.min_bucket
    )
    questions = {
        step: step_questions(triples, cfg.num_relations, request.inverse)
        for step, triples, split in timeline(dataset)
        if split == request.split
    }
    total = sum(len(q) for q in questions.values())
    if total == 0:
        raise ExportError(f"{request.data}: split {request.split!r} holds no facts")
    writer = _ExportWriter(request.out, total, request.steps, request.k, cfg.dim)
    counts = {"questions": total, "skipped_small_pool": 0, "gold_in_candidates": 0}
    last_step = max(questions)
    for step, triples, _ in timeline(dataset):
        if step > last_step:
            break
        if step in questions:
            _export_step(
                graph_model, window, recurrency, step, questions[step], request, writer, counts
            )
        window.advance(step, triples)
    if writer.count == 0:
        raise ExportError(f"no question of split {request.split!r} could be exported: {counts}")
    files = writer.finish()
    counts["exported"] = writer.count
    manifest = _manifest(request, dataset, graph_model, counts, files)
    manifest |= {**words, "recurrency": recurrency_entry}
    atomic_write_text(request.out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log.info("embeddings_exported", out=str(request.out), **manifest["counts"])
    return manifest


def dataset_words(dataset: TkgDataset) -> dict[str, Any]:
    """What a prompt needs in words: display names in id order (``entity_names``,
    ``relation_names``) and the ``calendar`` of the exported ``t`` column (None when unknown)."""
    names = display_names(dataset)
    calendar = calendar_of(dataset.name, dataset.directory, dataset.time_unit)
    if calendar is not None:
        first_t = min((int(f[:, 3].min()) for f in dataset.splits.values() if len(f)), default=0)
        calendar = coarsen(calendar, dataset.time_step, first_t)  # the column is t // time_step
    return {
        "entity_names": names["entities"],
        "relation_names": names["relations"],
        "calendar": calendar,
    }


def _tuned_recurrency(dataset: TkgDataset) -> tuple[RecurrencyScorer, dict[str, Any]]:
    """The recurrency baseline tuned on the dataset's valid split, and its manifest entry."""
    bench = Benchmark.from_dataset(dataset)
    started = time.perf_counter()
    try:
        params = tune_recurrency(bench, RECURRENCY_TUNING_SPLIT)
    except ValueError as exc:
        raise ExportError(f"cannot tune the recurrency baseline: {exc}") from None
    log.info(
        "recurrency_tuned",
        seconds=round(time.perf_counter() - started, 2),
        params=params.describe(),
    )
    entry = {"method": "recurrency", "tuned_on": RECURRENCY_TUNING_SPLIT, **params.to_dict()}
    return RecurrencyScorer(bench, params), entry


def _export_step(
    graph_model: GraphModel,
    window: RecentWindow,
    recurrency: RecurrencyScorer,
    step: int,
    questions: np.ndarray,
    request: ExportRequest,
    writer: _ExportWriter,
    counts: dict[str, int],
) -> None:
    """All questions of one step, from the window and the baseline holding the steps before it:
    candidates first, then both models' scores of them."""
    from services.graph import embeddings as emb_fns  # already imported by export_embeddings

    emb = graph_model.embed(window)
    scores, query = emb_fns.entity_scores(graph_model, emb, questions[:, 0], questions[:, 1])
    first, last = true_object_ranges(questions)
    pool = emb_fns.mcq_pool(window, step)
    chosen: list[tuple[int, np.ndarray, int]] = []  # question row, candidate ids, gold position
    for i, (s, r, o) in enumerate(questions.tolist()):
        true_objects = questions[first[i] : last[i], 2]
        try:
            candidates, gold_index = _choose(
                request, step, (s, r, o), true_objects, pool, scores[i]
            )
        except emb_fns.PoolTooSmallError:
            counts["skipped_small_pool"] += 1
            continue
        chosen.append((i, candidates, gold_index))
    if not chosen:
        return
    rows = np.array([i for i, _, _ in chosen])
    baseline_scores = recurrency.scores(
        step, questions[rows, 0], questions[rows, 1], np.stack([c for _, c, _ in chosen])
    )
    for (i, candidates, gold_index), baseline in zip(chosen, baseline_scores, strict=True):
        s, r, o = questions[i].tolist()
        counts["gold_in_candidates"] += int(gold_index >= 0)
        frames = emb_fns.query_frames(emb, s, r, candidates, scores[i], query[i])
        writer.add(
            {
                **frames._asdict(),
                "recurrency": baseline,
                "candidate_ids": candidates,
                "gold_index": gold_index,
                "queries": (s, r, o, step),
            }
        )


def _choose(
    request: ExportRequest,
    step: int,
    question: tuple[int, int, int],
    true_objects: np.ndarray,
    pool: np.ndarray,
    scores: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Candidate ids and the gold's position (-1 when live retrieval missed it)."""
    from services.graph import embeddings as emb_fns  # already imported by export_embeddings

    s, r, o = question
    if request.protocol == "live":
        candidates = emb_fns.live_candidates(scores, request.k)
        hits = np.flatnonzero(candidates == o)
        return candidates, int(hits[0]) if len(hits) else -1
    rng = emb_fns.mcq_rng(request.seed, step, s, r, o)
    return emb_fns.mcq_candidates(o, true_objects, pool, request.k, rng)


def _check_same_vocabulary(dataset: TkgDataset, manifest: dict[str, Any]) -> None:
    data = manifest["data"]
    found = (vocab_sha256(dataset.entity_names), vocab_sha256(dataset.relation_names))
    if found != (data["entities_sha256"], data["relations_sha256"]):
        raise ExportError(
            f"{dataset.directory}: vocabulary differs from the one graph artifact "
            f"{data['dataset']} was trained on (sha256 of entity/relation names)"
        )


def _manifest(
    request: ExportRequest,
    dataset: TkgDataset,
    graph_model: GraphModel,
    counts: dict[str, int],
    files: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "protocol": request.protocol,
        "num_candidates": request.k,
        "steps": request.steps,
        "dim": graph_model.cfg.dim,
        "history": graph_model.cfg.history,
        "seed": request.seed,
        "inverse": request.inverse,
        "graph_artifact": graph_model.artifact_id,
        "graph_artifact_dir": str(request.artifact),
        "dataset": dataset.name,
        "split": request.split,
        "time_step": dataset.time_step,
        "time_unit": dataset.time_unit,
        "query_columns": QUERY_COLUMNS,
        "counts": counts,
        "files": files,
    }


# --------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol export embeddings",
        description="Export the graph stage's per-query frames of one split (subject [T,d], "
        "relation [d], candidates [K,T,d], scores [K], query [d]), the recurrency baseline's "
        "scores of the candidates [K], names and calendar as checked files for LLM training.",
    )
    parser.add_argument("--artifact", type=Path, required=True, help="graph artifact folder")
    parser.add_argument("--data", type=Path, required=True, help="benchmark folder (RE-Net)")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="tgl-mcq")
    parser.add_argument("--k", type=int, default=10, help="candidates (tgl-mcq: 4, 6 or 10)")
    parser.add_argument("--steps", type=int, default=3, help="T: embeddings per entity")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tgl-mcq negatives")
    parser.add_argument(
        "--inverse", action="store_true", help="also ask (o, r + R, ?, t) for each fact"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument(
        "--mem-fraction", type=float, default=0.5, help="accelerator memory share for JAX"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="pipeline config whose logging section sets level and format "
        "(default: configs/default.yaml)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        request = ExportRequest(
            artifact=args.artifact,
            data=args.data,
            split=args.split,
            protocol=args.protocol,
            k=args.k,
            out=args.out,
            steps=args.steps,
            seed=args.seed,
            inverse=args.inverse,
        )
        config = load_config(args.config)
        jax_env.configure(args.mem_fraction)
        configure_logging("graph", config.logging.level, config.logging.format)
        manifest = export_embeddings(request)
    except (OSError, ArtifactError, ExportError, TkgFormatError, RuntimeError, ValueError) as exc:
        print(f"geopol export embeddings: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "counts": manifest["counts"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
