"""Atomic file replacement, for every file a reader may open while a writer is at work.

Event-store partitions, vocabularies, model artifacts, training checkpoints and reports are all
read by other processes (or by a person) while a stage may be rewriting them, and a crash must
leave the old or the new version, never a mix. One implementation serves them all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry so a rename inside it survives a power cut, not just a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` via a temp file in the same directory, fsync, then ``os.replace``.

    Readers therefore see either the previous file or the complete new one. The temp file is
    removed when anything fails, so an aborted write leaves no debris behind. The file is made
    world-readable (``mkstemp`` creates it private): reports and artifacts are meant to be read.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
