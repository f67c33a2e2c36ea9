"""The embedding export: the graph stage's answers for a whole split, as checked files.

The LLM is trained on exactly what the graph stage serves it, without importing JAX (DESIGN.md
invariant 3): ``geopol export embeddings`` (services/graph/export.py) writes one row per question,
the frames of :mod:`shared.graph_frames` plus what training and evaluation need, and this module
is the one reader every stage uses. Layout (all ``.npy``, memory-mapped on load)::

    subject.npy        float32 [N, T, d]     frames of shared.graph_frames, one row per question
    relation.npy       float32 [N, d]
    candidates.npy     float32 [N, K, T, d]
    scores.npy         float32 [N, K]        RE-GCN's logits of the candidates
    query.npy          float32 [N, d]        RE-GCN's decoder query vector of (s, r)
    recurrency.npy     float32 [N, K]        the recurrency baseline's scores of the candidates
    candidate_ids.npy  int64   [N, K]        entity ids of the candidates
    gold_index.npy     int64   [N]           position of the gold among them, or -1 (live miss)
    queries.npy        int64   [N, 4]        subject, relation, object, t (t in store steps)
    manifest.json      protocol, K, T, d, graph artifact, dataset, split, counts, file hashes

The manifest is written last (the commit point); :func:`load_export` checks it (the fields it
reads, and that each listed file is a plain name inside the folder) and every file (size, sha256,
dtype, shape) before anything is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import atomic_write_text
from shared.manifest import Fields, file_sha256, manifest_id, read_json

KIND = "graph-embeddings"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
QUERY_COLUMNS = ("subject", "relation", "object", "t")


class ExportError(ValueError):
    """The export cannot be made, or an export folder is incomplete or altered."""


def array_layout(steps: int, k: int, dim: int) -> dict[str, tuple[type, tuple[int, ...]]]:
    """Each array's dtype and per-row shape, in file order."""
    return {
        "subject": (np.float32, (steps, dim)),
        "relation": (np.float32, (dim,)),
        "candidates": (np.float32, (k, steps, dim)),
        "scores": (np.float32, (k,)),
        "query": (np.float32, (dim,)),
        "recurrency": (np.float32, (k,)),
        "candidate_ids": (np.int64, (k,)),
        "gold_index": (np.int64, ()),
        "queries": (np.int64, (len(QUERY_COLUMNS),)),
    }


@dataclass(frozen=True)
class ExportedSplit:
    """A checked export: its manifest, its arrays (memory-mapped, read-only) and its folder."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)
    directory: Path | None = None

    def __len__(self) -> int:
        return len(self.arrays["gold_index"])

    @property
    def num_candidates(self) -> int:
        return int(self.manifest["num_candidates"])

    @property
    def steps(self) -> int:
        return int(self.manifest["steps"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def export_id(self) -> str:
        """sha256 of the manifest (which holds every file's hash): names this export exactly."""
        return manifest_id(self.manifest)


def load_export(directory: Path) -> ExportedSplit:
    """Check the manifest and every file (size, sha256, dtype, shape), then map the arrays.

    A manifest field the reader uses that is missing or mistyped, and a listed file name that is
    not a plain name inside ``directory``, is an :class:`ExportError` naming the field."""
    directory = Path(directory)
    what = f"embedding export {directory}"
    manifest = read_json(directory / MANIFEST, what, ExportError)
    found = (manifest.get("kind"), manifest.get("format_version"))
    if found != (KIND, FORMAT_VERSION):
        raise ExportError(
            f"{what}: {MANIFEST} is {found}, expected {(KIND, FORMAT_VERSION)}"
            " (re-export it with `geopol export embeddings`)"
        )
    fields_ = Fields(manifest, MANIFEST, what, ExportError)
    for name in ("num_candidates", "steps", "dim"):
        fields_.get(name, int)
    files = fields_.section("files")
    expected = set(array_layout(1, 1, 1))
    listed = set(files.document)
    if listed != expected:
        raise ExportError(f"{what}: {MANIFEST} lists {sorted(listed)}, expected {sorted(expected)}")
    arrays = {name: _checked_array(directory, files.section(name)) for name in files.document}
    return ExportedSplit(manifest, arrays, directory)


def _checked_array(directory: Path, entry: Fields) -> np.ndarray:
    path = entry.file(directory, "file")
    size, sha, dtype, shape = (
        entry.get("bytes", int),
        entry.get("sha256", str),
        entry.get("dtype", str),
        entry.get("shape", list),
    )
    if not path.is_file():
        raise ExportError(f"{entry.what}: missing {path.name}")
    if path.stat().st_size != size or file_sha256(path) != sha:
        raise ExportError(
            f"{entry.what}: {path.name} differs from {MANIFEST} (size or sha256): "
            "changed after export"
        )
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if str(array.dtype) != dtype or list(array.shape) != shape:
        raise ExportError(
            f"{entry.what}: {path.name} is {array.dtype}{list(array.shape)}, "
            f"{MANIFEST} says {dtype}{shape}"
        )
    return array


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest entry of one written ``.npy`` file (what :func:`load_export` checks)."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return {
        "file": path.name,
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


def write_small_export(
    directory: Path, arrays: dict[str, np.ndarray], fields: dict[str, Any]
) -> dict[str, Any]:
    """Write an export that fits in memory (synthetic questions for benchmarks and tests): each
    array as ``.npy``, then the manifest (``fields`` plus kind, version and file entries) last.
    The graph stage's writer fills memory maps instead, for splits of any size."""
    if list(arrays) != list(array_layout(1, 1, 1)):
        raise ExportError(f"arrays {list(arrays)} are not the layout {list(array_layout(1, 1, 1))}")
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array)
        files[name] = file_entry(directory / f"{name}.npy")
    manifest = {**fields, "kind": KIND, "format_version": FORMAT_VERSION, "files": files}
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def gold_rows(export: ExportedSplit) -> np.ndarray:
    """Rows whose gold is among the candidates (the only ones a question can be made of)."""
    return np.flatnonzero(np.asarray(export.arrays["gold_index"]) >= 0)


def held_out_rows(export: ExportedSplit, count: int) -> np.ndarray:
    """The latest ``count`` answerable rows: what an LLM trained on this export alone validates
    on, and so what the influence of its training rows is measured against."""
    return gold_rows(export)[-count:]
