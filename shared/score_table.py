"""Score tables: every candidate's scores for a sample of questions, the calibrator's training data.

The llm stage writes one (``geopol llm score``, ``geopol eval llm``) and the calibrate stage fits
and evaluates on it, so the layout is a contract between the two and lives here. One table is
one method on one protocol at one K, for a seeded sample of rows of one embedding export:

- ``llm [n, K]``         the LLM's option-letter logits,
- ``graph [n, K]``       the graph model's scores of the same candidates,
- ``recurrency [n, K]``  the recurrency baseline's scores of the same candidates,
- ``candidate_ids [n, K]`` and ``rows [n]`` (the export rows),
- ``gold [n]``           the gold's position among the K, -1 when it is not there (a live miss).

The meta names the dataset, split, protocol, method and K, and (tables written since they do)
the export the rows are of: ``export`` (its folder) and ``export_id`` (its manifest's sha256);
:func:`check_of_export` checks a table against an export before its rows are looked up there.

Columns are in the **candidates' order** (the graph's rank order in live use), the order the
SCORES message carries them in, so a calibrator fitted here reads served messages the same way.
Stored as safetensors with string metadata: no pickle, and a table from elsewhere is checked
(shapes agree, every score finite, gold in range) before anything uses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
from safetensors.numpy import save as to_bytes

from shared.atomic import atomic_write_bytes
from shared.embedding_export import ExportedSplit

FEATURES = ("llm", "graph", "recurrency")
FORMAT = 1


class ScoreTableError(ValueError):
    """A score table that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class ScoreTable:
    """Scores of K candidates for n questions (see the module docstring for each array)."""

    llm: np.ndarray
    graph: np.ndarray
    recurrency: np.ndarray
    candidate_ids: np.ndarray
    rows: np.ndarray
    gold: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.gold)

    @property
    def k(self) -> int:
        return int(self.llm.shape[1])

    def features(self) -> np.ndarray:
        """``[n, K, 3]``: llm, graph, recurrency score of every candidate."""
        return np.stack([getattr(self, name) for name in FEATURES], axis=-1)

    def subset(self, mask: np.ndarray) -> ScoreTable:
        """The questions where ``mask`` holds (e.g. the gold among the candidates)."""
        arrays = {name: getattr(self, name)[mask] for name in _ARRAYS}
        return ScoreTable(**arrays, meta=dict(self.meta))


_ARRAYS = (*FEATURES, "candidate_ids", "rows", "gold")


def check(table: ScoreTable, source: str) -> None:
    """Raise :class:`ScoreTableError` naming ``source`` and the field when the table is unusable."""
    n_k = np.shape(table.llm)
    if len(n_k) != 2 or n_k[1] < 2:
        raise ScoreTableError(f"{source}: llm scores have shape {n_k}, expected [n, K>=2]")
    for name in FEATURES:
        array = getattr(table, name)
        if np.shape(array) != n_k:
            raise ScoreTableError(f"{source}: {name} has shape {np.shape(array)}, llm {n_k}")
        if not np.isfinite(array).all():
            raise ScoreTableError(f"{source}: {name} has a NaN or infinite score")
    if np.shape(table.candidate_ids) != n_k:
        raise ScoreTableError(f"{source}: candidate_ids shape {np.shape(table.candidate_ids)}")
    for name in ("rows", "gold"):
        if np.shape(getattr(table, name)) != (n_k[0],):
            raise ScoreTableError(f"{source}: {name} has shape {np.shape(getattr(table, name))}")
    gold = np.asarray(table.gold)
    if len(gold) and (gold.min() < -1 or gold.max() >= n_k[1]):
        raise ScoreTableError(f"{source}: gold positions outside -1..{n_k[1] - 1}")


def save(table: ScoreTable, path: Path) -> Path:
    """Write ``table`` atomically (safetensors; meta as one JSON string)."""
    check(table, str(path))
    arrays = {
        **{name: np.ascontiguousarray(getattr(table, name), np.float32) for name in FEATURES},
        "candidate_ids": np.ascontiguousarray(table.candidate_ids, np.int64),
        "rows": np.ascontiguousarray(table.rows, np.int64),
        "gold": np.ascontiguousarray(table.gold, np.int64),
    }
    metadata = {"format": str(FORMAT), "meta": json.dumps(table.meta, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, to_bytes(arrays, metadata=metadata))
    return path


def load(path: Path) -> ScoreTable:
    """Read and check a table written by :func:`save`."""
    if not path.is_file():
        raise ScoreTableError(f"{path}: no score table (write one with `geopol llm score`)")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        arrays = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise ScoreTableError(f"{path}: not a readable safetensors file ({exc})") from exc
    if metadata.get("format") != str(FORMAT):
        raise ScoreTableError(
            f"{path}: score table format {metadata.get('format')!r}, expected {FORMAT}"
        )
    missing = [name for name in _ARRAYS if name not in arrays]
    if missing:
        raise ScoreTableError(f"{path}: missing arrays {missing}")
    try:
        meta = json.loads(metadata.get("meta", "{}"))
    except json.JSONDecodeError as exc:
        raise ScoreTableError(f"{path}: metadata 'meta' is not JSON ({exc})") from exc
    table = ScoreTable(**{name: arrays[name] for name in _ARRAYS}, meta=meta)
    check(table, str(path))
    return table


def check_of_export(table: ScoreTable, export: ExportedSplit, source: str) -> None:
    """Raise :class:`ScoreTableError` naming ``source`` unless ``table``'s rows are rows of
    ``export``: the same export id where the table records one, the same dataset, split,
    protocol and graph artifact, every row in range and every candidate among that row's."""
    where = f"{source}: not scored from embedding export {export.directory}"
    recorded = table.meta.get("export_id")
    if recorded is not None and recorded != export.export_id:
        raise ScoreTableError(f"{where} (export id {recorded[:12]}, found {export.export_id[:12]})")
    for key in ("dataset", "split", "protocol", "graph_artifact"):
        if key in table.meta and table.meta[key] != export.manifest.get(key):
            raise ScoreTableError(
                f"{where} ({key} {table.meta[key]!r}, the export's {export.manifest.get(key)!r})"
            )
    rows = np.asarray(table.rows)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(export)):
        raise ScoreTableError(f"{where} (rows outside 0..{len(export) - 1})")
    exported = np.asarray(export.arrays["candidate_ids"])[rows]
    among = (np.asarray(table.candidate_ids)[:, :, None] == exported[:, None, :]).any(axis=2)
    if not among.all():
        raise ScoreTableError(f"{where} (candidates of row {int(rows[~among.all(axis=1)][0])})")
