"""Influence scores of an embedding export's questions: what graph writes and llm selects by.

``geopol export influence`` (services/graph/influence_cli.py, JAX) scores every row of an export;
the LLM's selections (services/llm/selection.py, torch) read them without importing JAX, so the
layout and its one checked reader live here. Layout of the folder::

    scores.safetensors  influence float32 [N]  ∇L_valᵀ (H + λI)⁻¹ ∇ℓ(row): higher helps more
                        loss      float32 [N]  the surrogate's own loss of the row
    manifest.json       kind, format, the export it scores (its manifest id and row count), the
                        graph artifact, the layer, the LiSSA settings, the validation rows, and
                        the sha256 of scores.safetensors

Loading checks the manifest, the file's hash, both arrays' dtype and length, and, given the
export, that the scores are of that very export; a mismatch is refused naming both values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from shared.atomic import atomic_write_bytes, atomic_write_text
from shared.embedding_export import ExportedSplit
from shared.manifest import manifest_id, read_kind, read_listed

KIND = "influence-scores"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SCORES = "scores.safetensors"
ARRAYS = ("influence", "loss")


class InfluenceScoresError(ValueError):
    """An influence folder that cannot be used; the message names the folder and the field."""


@dataclass(frozen=True)
class InfluenceScores:
    manifest: dict[str, Any]
    influence: np.ndarray
    loss: np.ndarray


def save(directory: Path, influence: np.ndarray, loss: np.ndarray, fields: dict[str, Any]) -> Path:
    """Write the scores and their manifest (``fields`` say what they are of); manifest last."""
    arrays = {"influence": influence, "loss": loss}
    for name, values in arrays.items():
        if values.ndim != 1 or len(values) != len(influence) or not np.isfinite(values).all():
            raise InfluenceScoresError(f"{name}: expected [{len(influence)}] finite values")
    directory.mkdir(parents=True, exist_ok=True)
    payload = save_tensors({k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()})
    atomic_write_bytes(directory / SCORES, payload)
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "rows": int(len(influence)),
        **fields,
        "files": {SCORES: {"sha256": hashlib.sha256(payload).hexdigest()}},
    }
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory


def of_export(export: ExportedSplit) -> dict[str, Any]:
    """The fields that tie scores to ``export``: its manifest id and row count."""
    return {"export": manifest_id(export.manifest), "export_rows": len(export)}


def load(directory: Path, export: ExportedSplit | None = None) -> InfluenceScores:
    """Read and check a folder written by :func:`save` (and, given it, that it scores ``export``)."""
    what = f"influence scores {directory}"
    manifest = read_kind(directory / MANIFEST, KIND, FORMAT_VERSION, what, InfluenceScoresError)
    payload = read_listed(directory, manifest, SCORES, what, InfluenceScoresError)
    tensors = load_tensors(payload)
    rows = manifest.get("rows")
    for name in ARRAYS:
        values = tensors.get(name)
        if values is None or values.dtype != np.float32 or values.shape != (rows,):
            got = None if values is None else (str(values.dtype), values.shape)
            raise InfluenceScoresError(f"{what}: {name} is {got}, expected float32 [{rows}]")
    if export is not None:
        for key, value in of_export(export).items():
            if manifest.get(key) != value:
                raise InfluenceScoresError(
                    f"{what}: {key} is {manifest.get(key)!r}, the export {export.directory} has "
                    f"{value!r} (scores of another export; run geopol export influence on it)"
                )
    return InfluenceScores(manifest, tensors["influence"], tensors["loss"])
