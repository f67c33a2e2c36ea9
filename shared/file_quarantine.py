"""Export files that cannot be read at all, kept out of the store with a record a person can read.

A truncated ``.zip`` (``BadZipFile``, or ``zlib.error`` from a damaged member) or a stray ``.csv``
that is not a GDELT export (``NotGdeltExportError``) would otherwise raise on every tick and on
every restart, because the source folder lists it again each time. Instead the file gets a JSON
record, ``QUARANTINE_DIR/files/NAME.json``, saying what was wrong and the file's size, mtime and
sha256; ``geopol status`` counts the records, and ingest skips the file until it changes: another
size or mtime makes it hash the file, and only other content is read again (a ``touch`` is not
a change). Bad *rows* of a readable file are a different matter: they go to
``QUARANTINE_DIR/NAME.jsonl`` (see ``export_ingest``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from shared.atomic import atomic_write_text
from shared.manifest import file_sha256


class FileQuarantine:
    """The quarantined files of one dataset; ``root`` is its quarantine folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.directory = root / "files"

    def holds(self, path: Path) -> bool:
        """Whether ``path`` is quarantined and unchanged since (its stat first, then content)."""
        record = self._read(path.name)
        if record is None:
            return False
        stat = path.stat()
        if (stat.st_size, stat.st_mtime_ns) == (record["size"], record["mtime_ns"]):
            return True
        if file_sha256(path) != record["sha256"]:
            return False
        self._write({**record, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        return True

    def add(self, path: Path, error: Exception) -> Path:
        """Quarantine ``path`` for ``error``; returns the record's path."""
        stat = path.stat()
        return self._write(
            {
                "file": str(path),
                "error": type(error).__name__,
                "reason": str(error),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": file_sha256(path),
                "time": time.time(),
            }
        )

    def reason(self, path: Path) -> str | None:
        """Why ``path`` is quarantined, or None when it is not (or changed since)."""
        record = self._read(path.name)
        return str(record["reason"]) if record is not None and self.holds(path) else None

    def release(self, path: Path) -> None:
        """Forget ``path`` (it was read after all: it changed, or was fixed)."""
        self._record_path(path.name).unlink(missing_ok=True)

    def count(self) -> int:
        """How many files are quarantined now."""
        if not self.directory.is_dir():
            return 0
        return sum(1 for _ in self.directory.glob("*.json"))

    def _record_path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self._record_path(name)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def _write(self, record: dict[str, Any]) -> Path:
        path = self._record_path(Path(record["file"]).name)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        return path
