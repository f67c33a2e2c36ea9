"""Reading the files of a saved folder (a graph or LLM artifact, a checkpoint, an embedding
export) so that a missing, unparsable or changed file is refused with a message naming the folder
and the file; and the hashes that name what a folder holds (DESIGN.md invariant 4).

No framework here: every stage checks its artifacts before torch or JAX starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks (exports and backbones are hundreds of MB)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def vocab_sha256(names: list[str]) -> str:
    """sha256 of a vocabulary in id order: two models agree on ids exactly when this agrees."""
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def manifest_id(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest in canonical JSON: names the model, its data and its files (the
    manifest holds every file's hash), independent of how the file was formatted. Forecasts
    carry it as their lineage (invariant 5)."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()


def read_json(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The JSON document at ``path``; ``what`` names the folder in messages ("graph artifact X")."""
    if not path.is_file():
        raise error(f"{what}: missing {path.name}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{what}: {path.name} is not valid JSON ({exc})") from None


def read_with_sha256(
    path: Path, expected: str, listed_in: str, what: str, error: type[Exception]
) -> bytes:
    """The bytes of ``path``, refused when missing or when their sha256 is not ``expected``."""
    if not path.is_file():
        raise error(f"{what}: missing file {path.name} listed in {listed_in}")
    payload = path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != expected:
        raise error(
            f"{what}: sha256 of {path.name} is {digest} but {listed_in} says {expected} "
            "(file changed after saving)"
        )
    return payload
