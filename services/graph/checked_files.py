"""Reading the files of a saved graph folder (artifact, checkpoint, embedding export) so that a
missing, unparsable or changed file is refused with a message naming the folder and the file.

No JAX here: the checks run before any framework starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


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
