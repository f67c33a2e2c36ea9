"""Dead-letter file: every refused message, as one JSON line, so nothing vanishes silently.

JSON lines (never pickle) keep the record readable by people and tools, and safe to load even
though the content came from an untrusted peer.
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


class DeadLetterWriter:
    """Appends rejected messages to ``path`` as JSON lines; safe to share between threads."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path = Path(path)
        self.stage = stage
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

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
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        return record

    def read(self) -> list[dict[str, Any]]:
        """All records so far (for tests, `geopol status` and post-mortems)."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
