"""Dead-letter file: every refused message, as one JSON line, so nothing vanishes silently.

JSON lines (never pickle) keep the record readable by people and tools, and safe to load even
though the content came from an untrusted peer. A peer that sends nothing but bad messages must
not fill the disk either, so the file rotates at a size limit: ``NAME.jsonl`` is being written,
``NAME.jsonl.1`` is the newest full one, and only ``keep`` full ones are kept.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.protocol.codec import as_buffer
from shared.protocol.errors import ProtocolError

_MAX_PREVIEW = 256


def _jsonable(value: Any) -> Any:
    """Make a header (from an untrusted peer) safe to dump: bytes become hex previews."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"hex": bytes(value[:_MAX_PREVIEW]).hex(), "nbytes": len(value)}
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)[:_MAX_PREVIEW]


def _record(raw: bytes, path: Path, number: int) -> dict[str, Any]:
    """One dead-letter line as its record, or an ``unreadable_record`` naming where it was."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if isinstance(record, dict):
        return record
    return {
        "reason": "unreadable_record",
        "detail": f"{path.name} line {number}: not a JSON record",
        "header_preview": _jsonable(raw[:_MAX_PREVIEW]),
    }


DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_KEEP = 3


class DeadLetterWriter:
    """Appends rejected messages to ``path`` as JSON lines; safe to share between threads.

    Before a record would take the file past ``max_bytes`` the file is rotated; a single record
    larger than the limit still gets written, alone in a fresh file, so nothing is dropped
    silently.
    """

    def __init__(
        self,
        path: Path,
        stage: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
    ) -> None:
        if max_bytes <= 0 or keep < 1:
            raise ValueError(f"dead-letter max_bytes {max_bytes} and keep {keep} must be >= 1")
        self.path = Path(path)
        self.stage = stage
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self._tail_checked = False  # only a file a dead process left can end mid-record
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def rotated(self, index: int) -> Path:
        """The ``index``-th rotated file (1 is the newest)."""
        return self.path.with_name(f"{self.path.name}.{index}")

    def write(self, error: ProtocolError, parts: Sequence[Any]) -> dict[str, Any]:
        """Record one rejected message; returns the record written."""
        record = {
            "time": time.time(),
            "stage": self.stage,
            "reason": error.reason,
            "error": type(error).__name__,
            "detail": error.detail,
            "header": _jsonable(error.header) if error.header is not None else None,
            "part_sizes": [as_buffer(p).nbytes for p in parts],
        }
        if error.header is None and parts:
            record["header_preview"] = _jsonable(bytes(as_buffer(parts[0])[:_MAX_PREVIEW]))
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            size = self._size()
            if size and size + len(line) > self.max_bytes:
                self._rotate()
            elif size and not self._tail_checked and not self._ends_with_newline():
                line = b"\n" + line  # a torn last record (a kill mid-write) stays its own line
            self._tail_checked = True
            with open(self.path, "ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        return record

    def _size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def _rotate(self) -> None:
        """Shift each rotated file up by one (``.keep`` is overwritten: the oldest falls off),
        then move the live file to ``.1``."""
        for index in range(self.keep - 1, 0, -1):
            if self.rotated(index).exists():
                os.replace(self.rotated(index), self.rotated(index + 1))
        os.replace(self.path, self.rotated(1))

    def read(self) -> list[dict[str, Any]]:
        """All records still on disk, oldest first (for tests, `geopol status` and post-mortems).

        A line that is not a JSON record (a write cut short by a kill, a damaged disk) becomes a
        record with reason ``unreadable_record`` naming its file and line, so it is counted and
        shown rather than hiding every record after it."""
        files = [self.rotated(i) for i in range(self.keep, 0, -1)] + [self.path]
        records: list[dict[str, Any]] = []
        for path in files:
            if path.exists():
                with open(path, "rb") as fh:
                    for number, raw in enumerate(fh, start=1):
                        if raw.strip():
                            records.append(_record(raw, path, number))
        return records
