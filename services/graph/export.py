"""``geopol export embeddings``: the graph stage's answers for a whole split, as files.

The LLM is trained on exactly what the graph stage will serve it, without ever importing JAX
(DESIGN.md invariant 3): this command walks a benchmark's time steps in order, keeps the same
:class:`~services.graph.history.RecentWindow` the service keeps (single-step protocol: the history
of step ``t`` is the real past before ``t``), and for every question ``(s, r, o, t)`` of the split
writes what an EMBEDDINGS message would carry, under one protocol:

- ``tgl-mcq`` (K in 4, 6, 10): gold plus K-1 negatives from the entities of the three steps
  before ``t``; a question with too few admissible negatives is skipped and counted;
- ``live``: the model's top-K, with the gold's position or -1 when the retriever missed it.

Output folder (all ``.npy``, loadable with ``numpy.load(..., mmap_mode="r")``)::

    subject.npy        float32 [N, T, d]     T-step embeddings of the subject
    relation.npy       float32 [N, d]        relation embedding
    candidates.npy     float32 [N, K, T, d]  T-step embeddings of each candidate
    scores.npy         float32 [N, K]        the graph model's logits of the candidates
    candidate_ids.npy  int64   [N, K]        entity ids of the candidates
    gold_index.npy     int64   [N]           position of the gold among them, or -1
    queries.npy        int64   [N, 4]        subject, relation, object, t (t in store steps)
    manifest.json      protocol, K, T, d, graph artifact, dataset, split, counts, file hashes

Questions are the split's distinct facts (with ``--inverse`` also ``(o, r + R, s, t)``), ordered
by ``t`` then ``(s, r, o)``; ``t`` is the step index ``t // time_step``, as the event store counts.
Arrays are filled through memory maps, so a large split never has to fit in memory. The manifest
is written last and :func:`load_export` checks it (sizes, sha256, dtypes, shapes) before use.

This module imports no JAX at import time; :func:`export_embeddings` imports it after ``main``
has set the memory budget.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from services.graph import jax_env
from services.graph.artifact import ArtifactError, load, vocab_sha256
from services.graph.checked_files import read_json
from services.ingest.store import SPLITS
from services.ingest.tkg_loader import TkgDataset, TkgFormatError, load_tkg
from shared.log import configure_logging

if TYPE_CHECKING:
    from services.graph.embeddings import GraphModel, QueryFrames
    from services.graph.history import RecentWindow

log = structlog.get_logger(__name__)

KIND = "graph-embeddings"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROTOCOLS = ("tgl-mcq", "live")
MCQ_SIZES = (4, 6, 10)
QUERY_COLUMNS = ["subject", "relation", "object", "t"]


class ExportError(ValueError):
    """The export cannot be made, or an export folder is incomplete or altered."""


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


@dataclass(frozen=True)
class ExportedSplit:
    """A checked export: its manifest and its arrays (memory-mapped, read-only)."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)


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
        array = np.load(self.path, mmap_mode="r")
        return {
            "file": self.path.name,
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "bytes": self.path.stat().st_size,
            "sha256": _sha256(self.path),
        }


class _ExportWriter:
    """The seven arrays of an export, written one question at a time."""

    def __init__(self, out: Path, capacity: int, steps: int, k: int, dim: int) -> None:
        layout: dict[str, tuple[type, tuple[int, ...]]] = {
            "subject": (np.float32, (steps, dim)),
            "relation": (np.float32, (dim,)),
            "candidates": (np.float32, (k, steps, dim)),
            "scores": (np.float32, (k,)),
            "candidate_ids": (np.int64, (k,)),
            "gold_index": (np.int64, ()),
            "queries": (np.int64, (len(QUERY_COLUMNS),)),
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)  # a half-written export must not load
        self.files = {
            name: _ArrayFile(out / f"{name}.npy", dtype, tail, capacity)
            for name, (dtype, tail) in layout.items()
        }
        self.count = 0

    def add(
        self, frames: QueryFrames, candidates: np.ndarray, gold_index: int, query: tuple[int, ...]
    ) -> None:
        row = self.count
        for name, value in (
            *frames._asdict().items(),
            ("candidate_ids", candidates),
            ("gold_index", gold_index),
            ("queries", query),
        ):
            self.files[name].rows[row] = value
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
            _export_step(graph_model, window, step, questions[step], request, writer, counts)
        window.advance(step, triples)
    if writer.count == 0:
        raise ExportError(f"no question of split {request.split!r} could be exported: {counts}")
    files = writer.finish()
    manifest = _manifest(request, dataset, graph_model, {**counts, "exported": writer.count}, files)
    _write_json(request.out / MANIFEST, manifest)
    log.info("embeddings_exported", out=str(request.out), **manifest["counts"])
    return manifest


def _export_step(
    graph_model: GraphModel,
    window: RecentWindow,
    step: int,
    questions: np.ndarray,
    request: ExportRequest,
    writer: _ExportWriter,
    counts: dict[str, int],
) -> None:
    """All questions of one step, from the window holding the steps before it."""
    from services.graph import embeddings as emb_fns  # already imported by export_embeddings

    emb = graph_model.embed(window)
    scores = emb_fns.entity_scores(graph_model, emb, questions[:, 0], questions[:, 1])
    first, last = true_object_ranges(questions)
    pool = emb_fns.mcq_pool(window, step)
    for i, (s, r, o) in enumerate(questions.tolist()):
        true_objects = questions[first[i] : last[i], 2]
        try:
            candidates, gold_index = _choose(
                request, step, (s, r, o), true_objects, pool, scores[i]
            )
        except emb_fns.PoolTooSmallError:
            counts["skipped_small_pool"] += 1
            continue
        counts["gold_in_candidates"] += int(gold_index >= 0)
        frames = emb_fns.query_frames(emb, s, r, candidates, scores[i])
        writer.add(frames, candidates, gold_index, (s, r, o, step))


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


# --------------------------------------------------------------------------- reading


def load_export(directory: Path) -> ExportedSplit:
    """Check the manifest and every file (size, sha256, dtype, shape), then map the arrays."""
    directory = Path(directory)
    manifest = _read_manifest(directory)
    arrays = {name: _checked_array(directory, entry) for name, entry in manifest["files"].items()}
    return ExportedSplit(manifest, arrays)


def _read_manifest(directory: Path) -> dict[str, Any]:
    manifest = read_json(directory / MANIFEST, f"embedding export {directory}", ExportError)
    found = (manifest.get("kind"), manifest.get("format_version"))
    if found != (KIND, FORMAT_VERSION):
        raise ExportError(
            f"embedding export {directory}: kind/format {found}, expected {(KIND, FORMAT_VERSION)}"
        )
    return manifest


def _checked_array(directory: Path, entry: dict[str, Any]) -> np.ndarray:
    path = directory / entry["file"]
    if not path.is_file():
        raise ExportError(f"embedding export {directory}: missing {entry['file']}")
    if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
        raise ExportError(
            f"embedding export {directory}: {entry['file']} differs from {MANIFEST} "
            "(size or sha256): changed after export"
        )
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if str(array.dtype) != entry["dtype"] or list(array.shape) != entry["shape"]:
        raise ExportError(
            f"embedding export {directory}: {entry['file']} is {array.dtype}{list(array.shape)}, "
            f"{MANIFEST} says {entry['dtype']}{entry['shape']}"
        )
    return array


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomically (temp file, fsync, rename): the manifest is the commit point of an export."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol export embeddings",
        description="Export the graph stage's per-query embeddings of one split (subject [T,d], "
        "relation [d], candidates [K,T,d], scores [K]) as checked .npy files for LLM training.",
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
        jax_env.configure(args.mem_fraction)
        configure_logging("graph")
        manifest = export_embeddings(request)
    except (OSError, ArtifactError, ExportError, TkgFormatError, RuntimeError, ValueError) as exc:
        print(f"geopol export embeddings: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "counts": manifest["counts"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
