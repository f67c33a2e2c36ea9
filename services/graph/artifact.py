"""The graph artifact: a directory a trained RE-GCN can be served from (DESIGN.md, invariant 4).

Layout::

    manifest.json             what it is, the configs, data cut-off, vocab hashes, dims, file hashes
    params.safetensors        params and batch-norm statistics, flattened to named float32 arrays
    static_graph.safetensors  the entity-word triples (only when the static graph is used)

:func:`load` reads and checks the manifest first: kind and format, the fields and types it reads
(a malformed manifest is refused, never a KeyError), that each listed file name is a plain name
inside the directory (shared.manifest.member), then the counts and dims the caller expects, then
that each listed file exists and has its recorded size and sha256. Only then
are the tensors parsed, and each is checked against the shape the manifest recorded. A failure
raises :class:`ArtifactError` naming the field and both values. :func:`save` removes an old
manifest before writing and writes the new one last, so a save cut short leaves a directory that
refuses to load rather than one that loads mismatched files.

No JAX here: arrays are numpy, so the loader can run (and refuse) before any framework starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import numpy as st_numpy

from services.graph.config import ModelConfig
from shared.atomic import atomic_write_bytes
from shared.manifest import Fields, member, read_json, read_with_sha256

KIND = "regcn"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARAMS_FILE = "params.safetensors"
STATIC_FILE = "static_graph.safetensors"
_SEPARATOR = "/"


class ArtifactError(ValueError):
    """The artifact is incomplete, tampered with, or not the one the caller expects."""


@dataclass(frozen=True)
class DataInfo:
    """Which data the model saw: the last training time step and fingerprints of the vocabulary."""

    dataset: str
    cutoff_t: int
    num_entities: int
    num_relations: int
    entities_sha256: str
    relations_sha256: str
    source_sha256: dict[str, str]


@dataclass(frozen=True)
class GraphArtifact:
    """A loaded artifact: numpy pytrees ready for ``model.predict`` and the manifest they came with."""

    manifest: dict[str, Any]
    model_config: ModelConfig
    params: dict[str, Any]
    batch_stats: dict[str, Any]
    static_triples: np.ndarray | None


def save(
    directory: Path,
    *,
    model_config: ModelConfig,
    train_config: dict[str, Any],
    params: dict[str, Any],
    batch_stats: dict[str, Any],
    static_triples: np.ndarray | None,
    data: DataInfo,
    metrics: dict[str, Any],
) -> Path:
    """Write the artifact into ``directory`` (created if needed); returns the manifest path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    tensors = {**_flatten(params, "params"), **_flatten(batch_stats, "batch_stats")}
    files = {PARAMS_FILE: st_numpy.save(tensors)}
    if static_triples is not None:
        files[STATIC_FILE] = st_numpy.save({"triples": np.asarray(static_triples, np.int64)})
    for name, payload in files.items():
        atomic_write_bytes(directory / name, payload)
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": model_config.to_dict(),
        "train_config": train_config,
        "data": asdict(data),
        "dims": {
            "num_entities": model_config.num_entities,
            "num_relations": model_config.num_relations,
            "dim": model_config.dim,
            "tensors": {name: list(array.shape) for name, array in tensors.items()},
        },
        "files": {
            name: {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
            for name, payload in files.items()
        },
        "metrics": metrics,
    }
    path = directory / MANIFEST
    atomic_write_bytes(path, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    return path


def read_manifest(directory: Path) -> dict[str, Any]:
    """The parsed manifest, after checking it is a RE-GCN artifact of a known format whose
    sections have the fields and types every reader of it uses (``config``, ``train_config``,
    ``dims``, ``files``, ``data``): a malformed one is an :class:`ArtifactError` naming the field,
    so no caller meets a KeyError."""
    what = f"graph artifact {directory}"
    manifest = read_json(Path(directory) / MANIFEST, what, ArtifactError)
    fields_ = Fields(manifest, MANIFEST, what, ArtifactError)
    _require(directory, "kind", manifest.get("kind"), KIND)
    _require(directory, "format_version", manifest.get("format_version"), FORMAT_VERSION)
    fields_.get("config", dict)
    fields_.get("train_config", dict)
    dims = fields_.section("dims")
    for name in ("num_entities", "num_relations", "dim"):
        dims.get(name, int)
    dims.get("tensors", dict)
    files = fields_.section("files")
    for name in files.document:
        member(Path(directory), name, MANIFEST, "files", what, ArtifactError)
        entry = files.section(name)
        entry.get("sha256", str)
        entry.get("bytes", int)
    data = fields_.section("data")
    for name in ("num_entities", "num_relations", "cutoff_t"):
        data.get(name, int)
    for name in ("dataset", "entities_sha256", "relations_sha256"):
        data.get(name, str)
    return manifest


def load(
    directory: Path,
    *,
    num_entities: int | None = None,
    num_relations: int | None = None,
    dim: int | None = None,
) -> GraphArtifact:
    """Check the manifest against the caller's expectations and the files, then load the tensors."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    dims = manifest["dims"]
    for field_name, expected in (
        ("num_entities", num_entities),
        ("num_relations", num_relations),
        ("dim", dim),
    ):
        if expected is not None:
            _require(directory, field_name, dims[field_name], expected)
    model_config = _model_config(directory, manifest["config"])
    payloads = {
        name: _read_checked(directory, name, entry) for name, entry in manifest["files"].items()
    }
    if PARAMS_FILE not in payloads:
        raise ArtifactError(f"graph artifact {directory}: manifest lists no {PARAMS_FILE}")
    tensors = st_numpy.load(payloads[PARAMS_FILE])
    _check_tensors(directory, tensors, dims["tensors"])
    static = st_numpy.load(payloads[STATIC_FILE])["triples"] if STATIC_FILE in payloads else None
    if model_config.use_static and static is None:
        raise ArtifactError(
            f"graph artifact {directory}: use_static is on but {STATIC_FILE} is not listed"
        )
    nested = _unflatten(tensors)
    return GraphArtifact(manifest, model_config, nested["params"], nested["batch_stats"], static)


# --------------------------------------------------------------------------- checks


def _require(directory: Path, field_name: str, found: Any, expected: Any) -> None:
    if found != expected:
        raise ArtifactError(
            f"graph artifact {directory}: {field_name} is {found!r} in {MANIFEST} "
            f"but {expected!r} is expected"
        )


def _model_config(directory: Path, raw: dict[str, Any]) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ArtifactError(f"graph artifact {directory}: unknown config fields {unknown}")
    try:
        return ModelConfig(**raw)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"graph artifact {directory}: bad config ({exc})") from None


def _read_checked(directory: Path, name: str, entry: dict[str, Any]) -> bytes:
    """The file's bytes, refused when missing or when its size or sha256 differs from the manifest.
    ``name`` and ``entry`` were checked by :func:`read_manifest` (a plain name, typed fields)."""
    path = directory / name
    if not path.is_file():
        raise ArtifactError(f"graph artifact {directory}: missing file {name} listed in {MANIFEST}")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ArtifactError(
            f"graph artifact {directory}: {name} has {size} bytes but {MANIFEST} says {entry['bytes']}"
        )
    return read_with_sha256(
        path, entry["sha256"], MANIFEST, f"graph artifact {directory}", ArtifactError
    )


def _check_tensors(
    directory: Path, tensors: dict[str, np.ndarray], shapes: dict[str, list[int]]
) -> None:
    if set(tensors) != set(shapes):
        missing, extra = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
        raise ArtifactError(
            f"graph artifact {directory}: tensors missing {missing}, unexpected {extra}"
        )
    for name, array in tensors.items():
        if list(array.shape) != shapes[name] or array.dtype != np.float32:
            raise ArtifactError(
                f"graph artifact {directory}: tensor {name} is {array.dtype}{list(array.shape)} "
                f"but {MANIFEST} says float32{shapes[name]}"
            )


# --------------------------------------------------------------------------- pytrees and files


def _flatten(tree: dict[str, Any], prefix: str) -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> ``{"prefix/a/b": float32 array}``."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if _SEPARATOR in key:
            raise ValueError(f"parameter name {key!r} contains {_SEPARATOR!r}")
        name = f"{prefix}{_SEPARATOR}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    return flat


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, array in flat.items():
        *parents, leaf = name.split(_SEPARATOR)
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = array
    return tree
