"""Reading the files of a saved folder (a graph or LLM artifact, a checkpoint, an embedding
export) so that a missing, unparsable or changed file is refused with a message naming the folder
and the file; and the hashes that name what a folder holds (DESIGN.md invariant 4).

A manifest is data, not code: it may be truncated, hand-edited or written by someone else. So
its fields are read through :class:`Fields`, which refuses a missing key or a value of the wrong
type with the folder's own error type, naming the manifest and the field (never a bare
KeyError), and every file name it lists goes through :func:`member`, which keeps it a plain
name inside the folder (``../x``, ``/etc/hostname`` or ``sub/x`` would make a loader read and
hash a file the folder does not hold).

No framework here: every stage checks its artifacts before torch or JAX starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
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
    """The JSON object at ``path``; ``what`` names the folder in messages ("graph artifact X").

    A document that parses but is not an object (a list, a number) is refused too: every
    manifest is one, and a caller's ``.get`` on a list would fail with an AttributeError.
    """
    if not path.is_file():
        raise error(f"{what}: missing {path.name}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{what}: {path.name} is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise error(f"{what}: {path.name} holds a JSON {type(document).__name__}, not an object")
    return document


def member(
    directory: Path, name: object, listed_in: str, field: str, what: str, error: type[Exception]
) -> Path:
    """``directory / name``, once ``name`` is a plain file name of that folder.

    Refused (with ``error``, naming ``listed_in`` and ``field``): a non-string or empty name,
    ``.`` and ``..``, absolute paths, and any name with a separator (``/`` or ``\\``, so a
    manifest copied from Windows cannot escape either) or a NUL byte.
    """
    plain = (
        isinstance(name, str)
        and name not in {"", ".", ".."}
        and "\0" not in name
        and PurePosixPath(name).name == name
        and PureWindowsPath(name).name == name
    )
    if not plain:
        raise error(
            f"{what}: {listed_in} field {field} is {name!r}, not a plain file name inside "
            f"{directory} (no folder, no separator, not absolute)"
        )
    return Path(directory) / str(name)


def read_versioned_json(
    path: Path, version: int, what: str, error: type[Exception]
) -> dict[str, Any]:
    """:func:`read_json`, refused unless its ``format_version`` is ``version``: a file written
    by another version of the code is named, not misread."""
    document = read_json(path, what, error)
    if document.get("format_version") != version:
        raise error(
            f"{what}: format_version is {document.get('format_version')!r} "
            f"but {version} is expected"
        )
    return document


@dataclass(frozen=True)
class Fields:
    """Typed access to the fields of a parsed manifest, refusing with the folder's error type.

    ``what`` names the folder ("graph artifact X"), ``listed_in`` the file ("manifest.json");
    ``prefix`` is the dotted path of this section inside it ("dims.", "files.params.").
    """

    document: dict[str, Any]
    listed_in: str
    what: str
    error: type[Exception]
    prefix: str = ""

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        """The value of ``key``, refused when it is missing or not of ``kind`` (a JSON ``true``
        is no integer: ``bool`` passes only where it is asked for)."""
        if key not in self.document:
            raise self.error(f"{self.what}: {self.listed_in} has no field {self.prefix}{key}")
        value = self.document[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        is_bool_for_number = isinstance(value, bool) and bool not in kinds
        if not isinstance(value, kinds) or is_bool_for_number:
            wanted = " or ".join(k.__name__ for k in kinds)
            raise self.error(
                f"{self.what}: {self.listed_in} field {self.prefix}{key} is "
                f"{type(value).__name__} {_short(value)}, expected {wanted}"
            )
        return value

    def section(self, key: str) -> Fields:
        """The JSON object under ``key``, as :class:`Fields` naming its own dotted path."""
        return Fields(
            self.get(key, dict), self.listed_in, self.what, self.error, f"{self.prefix}{key}."
        )

    def file(self, directory: Path, key: str) -> Path:
        """The file named by the string field ``key``, a plain name inside ``directory``."""
        return member(
            directory, self.get(key, str), self.listed_in, self.prefix + key, self.what, self.error
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


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


def differences(first: dict[str, Any], second: dict[str, Any], names: tuple[str, str]) -> list[str]:
    """``"key: A <first name>, B <second name>"`` for each key whose values differ, sorted."""
    return [
        f"{key}: {first.get(key)!r} {names[0]}, {second.get(key)!r} {names[1]}"
        for key in sorted(set(first) | set(second))
        if first.get(key) != second.get(key)
    ]


def read_kind(
    path: Path, kind: str, version: int, what: str, error: type[Exception]
) -> dict[str, Any]:
    """:func:`read_json` of a manifest, refused unless its ``kind`` and ``format_version`` are
    the ones this code writes."""
    manifest = read_json(path, what, error)
    if manifest.get("kind") != kind or manifest.get("format_version") != version:
        raise error(
            f"{what}: kind {manifest.get('kind')!r} format {manifest.get('format_version')!r}, "
            f"expected {kind!r} format {version}"
        )
    return manifest


def read_listed(
    directory: Path, manifest: dict[str, Any], name: str, what: str, error: type[Exception]
) -> bytes:
    """The bytes of file ``name`` of ``directory``, checked against the sha256 its manifest
    (``manifest.json``) lists under ``files``."""
    expected = manifest.get("files", {}).get(name, {}).get("sha256")
    if not expected:
        raise error(f"{what}: manifest.json lists no sha256 for {name}")
    return read_with_sha256(directory / name, expected, "manifest.json", what, error)
