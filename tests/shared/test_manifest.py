"""The hashes that name a saved folder's contents, and the checked readers of its files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared.manifest import file_sha256, manifest_id, read_json, read_with_sha256, vocab_sha256


class Refused(ValueError):
    """The error type a caller hands the readers."""


def test_manifest_id_ignores_key_order_but_not_content() -> None:
    a = manifest_id({"a": 1, "b": {"c": 2}})
    assert a == manifest_id({"b": {"c": 2}, "a": 1})
    assert a != manifest_id({"a": 1, "b": {"c": 3}})


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    payload = bytes(range(256)) * 5000  # more than one read chunk
    path.write_bytes(payload)
    assert file_sha256(path) == hashlib.sha256(payload).hexdigest()
    path.write_bytes(b"")
    assert file_sha256(path) == hashlib.sha256(b"").hexdigest()


def test_vocab_sha256_depends_on_names_and_their_order() -> None:
    names = ["Barack_Obama", "China", "Police_(Australia)"]
    assert vocab_sha256(names) == hashlib.sha256("\n".join(names).encode()).hexdigest()
    assert vocab_sha256(names) != vocab_sha256(names[::-1])
    assert vocab_sha256(["ab"]) != vocab_sha256(["a", "b"])


def test_readers_name_the_folder_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    with pytest.raises(Refused, match="artifact X: missing manifest.json"):
        read_json(path, "artifact X", Refused)
    path.write_text("{not json")
    with pytest.raises(Refused, match="manifest.json is not valid JSON"):
        read_json(path, "artifact X", Refused)
    path.write_text('{"a": 1}')
    assert read_json(path, "artifact X", Refused) == {"a": 1}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_with_sha256(path, digest, "index.json", "artifact X", Refused) == b'{"a": 1}'
    with pytest.raises(Refused, match="file changed after saving"):
        read_with_sha256(path, "0" * 64, "index.json", "artifact X", Refused)
