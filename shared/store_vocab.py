"""Append-only string-key vocabularies (entity and relation keys -> dense int ids).

Every artefact downstream (graph snapshots, embeddings, checkpoints) indexes rows by these ids,
so an id must never change once handed out: keys only ever get appended, in order of first
appearance, and the file on disk is replaced atomically so a crash leaves the old or the new
version, never a mix. The TSV is meant to be read by people too (``id<TAB>key<TAB>label``).

Files are replaced with ``shared.atomic.atomic_write``. These are the event store's vocabularies
(``shared/event_store.py``), so they live in shared/ beside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from shared.atomic import atomic_write_bytes

HEADER = "id\tkey\tlabel"
# Characters that would break the one-record-per-line TSV.
_FORBIDDEN = ("\t", "\n", "\r")

KeySource = Sequence[str] | pl.Series


class VocabularyError(ValueError):
    """A vocabulary file or key is invalid; the message names the file and line when known."""


def _as_list(keys: KeySource) -> list[str]:
    """Plain list view of the keys (dict lookups over a list run at C speed)."""
    return keys.to_list() if isinstance(keys, pl.Series) else list(keys)


def _distinct(keys: KeySource) -> list[str]:
    """The distinct keys in order of first appearance; a Series is reduced by polars, so Python
    only ever sees each distinct key once (a batch has ~1M keys but a few thousand distinct)."""
    if isinstance(keys, pl.Series):
        return keys.unique(maintain_order=True).to_list()
    return list(dict.fromkeys(keys))


def first_appearance(frame: pl.DataFrame, columns: Sequence[str]) -> pl.Series:
    """The distinct values of ``columns`` in the order met reading ``frame`` row by row, left to
    right (row 0's columns, then row 1's, ...): the order in which keys get their ids.

    Each column is cut to the first row of each value before the columns are merged, so only
    distinct values get grouped and sorted (interleaving the columns into one long list first
    costs several times more).
    """
    width = len(columns)
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    firsts = [
        frame.lazy()
        .select(pl.col(column).alias("key"), (row * width + i).alias("pos"))
        .filter(pl.col("key").is_first_distinct())
        for i, column in enumerate(columns)
    ]
    merged = pl.concat(firsts).group_by("key").agg(pl.col("pos").min()).sort("pos")
    return merged.collect()["key"]


def _check_text(value: object, what: str) -> str:
    """Reject values the TSV cannot hold; a bad key must fail before anything is written."""
    if not isinstance(value, str) or not value:
        raise VocabularyError(f"{what} must be a non-empty string, got {value!r}")
    if any(char in value for char in _FORBIDDEN):
        raise VocabularyError(f"{what} {value!r} contains a tab or line break")
    return value


class Vocabulary:
    """Append-only mapping key -> id with an optional human label per key.

    Ids are 0..n-1 in order of first appearance and never change; labels may be filled in later
    for keys that have none, but never overwritten (a label is display data, the key is identity).
    """

    def __init__(self, keys: KeySource = (), labels: Mapping[str, str | None] | None = None):
        self._keys: list[str] = []
        self._labels: list[str | None] = []
        self._index: dict[str, int] = {}
        self.add(keys, labels)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} keys)"

    def keys(self) -> list[str]:
        """All keys in id order (a copy: position i holds the key of id i)."""
        return list(self._keys)

    def key(self, key_id: int) -> str:
        """The key with id ``key_id``."""
        return self._keys[key_id]

    def label(self, key: str) -> str | None:
        """The human label of ``key`` (None when it has none); KeyError when unknown."""
        return self._labels[self._index[key]]

    def add(self, keys: KeySource, labels: Mapping[str, str | None] | None = None) -> np.ndarray:
        """Append unseen keys in order of first appearance; return the ids of all ``keys``.

        ``labels`` fills the label of any key in the vocabulary that has none yet.
        """
        keys = keys if isinstance(keys, pl.Series) else list(keys)  # read twice below
        for key in _distinct(keys):
            if key not in self._index:
                self._index[_check_text(key, "key")] = len(self._keys)
                self._keys.append(key)
                self._labels.append(None)
        if labels:
            self._fill_labels(labels)
        return self.ids(keys)

    def _fill_labels(self, labels: Mapping[str, str | None]) -> None:
        """Set missing labels; keys not in the vocabulary are ignored (labels never add keys)."""
        for key, label in labels.items():
            key_id = self._index.get(key)
            if key_id is not None and label and self._labels[key_id] is None:
                self._labels[key_id] = _check_text(label, f"label of {key!r}")

    def ids(self, keys: KeySource) -> np.ndarray:
        """Ids of ``keys`` as int64; KeyError naming the first key that is not in the vocabulary.

        A Series is looked up by polars (``replace_strict``) from the ids of its distinct keys,
        several times faster than a Python lookup per key.
        """
        if isinstance(keys, pl.Series):
            distinct = keys.unique(maintain_order=True)
            distinct_ids = self.ids(distinct.to_list())
            return keys.replace_strict(distinct, distinct_ids, return_dtype=pl.Int64).to_numpy()
        key_list = list(keys)
        try:
            return np.fromiter(
                map(self._index.__getitem__, key_list), dtype=np.int64, count=len(key_list)
            )
        except KeyError as err:
            raise KeyError(
                f"key {err.args[0]!r} is not in the vocabulary ({len(self)} keys)"
            ) from None

    def oov_rate(self, keys: KeySource) -> float:
        """Share of ``keys`` (as given, repeats count) not in the vocabulary; 0.0 when empty."""
        key_list = _as_list(keys)
        if not key_list:
            return 0.0
        missing = sum(1 for key in key_list if key not in self._index)
        return missing / len(key_list)

    def prefix(self, size: int) -> Vocabulary:
        """A copy holding the first ``size`` keys: the vocabulary as it was at that size.

        Because ids are append-only, this is exactly an earlier state; the store uses it to drop
        keys of an ingest that crashed before committing.
        """
        if not 0 <= size <= len(self):
            raise ValueError(f"prefix size {size} outside 0..{len(self)}")
        copy = Vocabulary()
        copy._keys = self._keys[:size]
        copy._labels = self._labels[:size]
        copy._index = {key: key_id for key_id, key in enumerate(copy._keys)}
        return copy

    def to_bytes(self) -> bytes:
        """The TSV serialisation (header, then ``id<TAB>key<TAB>label`` per line, LF endings)."""
        rows = (
            f"{i}\t{key}\t{label or ''}"
            for i, (key, label) in enumerate(zip(self._keys, self._labels, strict=True))
        )
        return ("\n".join([HEADER, *rows]) + "\n").encode("utf-8")

    def sha256(self) -> str:
        """Hex sha256 of the serialisation, so artefacts can record which vocabulary they used."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: Path) -> None:
        """Write the TSV atomically (temp file, fsync, rename)."""
        data = self.to_bytes()
        atomic_write_bytes(Path(path), data)

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Read and validate a TSV written by ``save``; errors name the file and line."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise VocabularyError(f"{path}: not valid UTF-8 ({err})") from None
        return cls._parse(path, text)

    @classmethod
    def _parse(cls, path: Path, text: str) -> Vocabulary:
        """Validate header, field count, contiguous ids 0..n-1 and unique non-empty keys."""
        lines = text.split("\n")
        if lines[-1] != "":
            raise VocabularyError(
                f"{path}:{len(lines)}: last line has no newline (truncated file?)"
            )
        lines.pop()
        if not lines or lines[0].rstrip("\r") != HEADER:
            raise VocabularyError(f"{path}:1: expected header {HEADER!r}")
        vocab = cls()
        for lineno, line in enumerate(lines[1:], start=2):
            vocab._append_parsed(path, lineno, line.rstrip("\r"))
        return vocab

    def _append_parsed(self, path: Path, lineno: int, line: str) -> None:
        """Append one parsed TSV record, rejecting anything that would break id stability."""
        fields = line.split("\t")
        if len(fields) != 3:
            raise VocabularyError(
                f"{path}:{lineno}: expected 3 tab-separated fields, got {len(fields)}"
            )
        id_text, key, label = fields
        if id_text != str(len(self)):
            raise VocabularyError(
                f"{path}:{lineno}: id {id_text!r} where {len(self)} was expected "
                "(ids must be 0..n-1 in file order)"
            )
        if not key:
            raise VocabularyError(f"{path}:{lineno}: empty key")
        if key in self._index:
            raise VocabularyError(
                f"{path}:{lineno}: duplicate key {key!r} (first at line {self._index[key] + 2})"
            )
        self._index[key] = len(self._keys)
        self._keys.append(key)
        self._labels.append(label or None)
