"""The one checker of manifest file names and fields every saved folder's reader uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.manifest import Fields, member


class Refused(ValueError):
    """The error type a caller hands the checkers."""


@pytest.mark.parametrize(
    "name", ["../x", "/etc/hostname", "a/b", "a\\b", "..", ".", "", "x\0y", "C:x", 3, None]
)
def test_only_plain_names_inside_the_folder_pass(tmp_path: Path, name: object) -> None:
    with pytest.raises(Refused, match=r"artifact X: manifest\.json field files is .*plain file"):
        member(tmp_path, name, "manifest.json", "files", "artifact X", Refused)


def test_a_plain_name_is_joined_to_its_folder(tmp_path: Path) -> None:
    assert member(tmp_path, "params.safetensors", "m", "f", "X", Refused) == (
        tmp_path / "params.safetensors"
    )
    assert member(tmp_path, "..hidden", "m", "f", "X", Refused).parent == tmp_path


def test_fields_name_the_manifest_and_the_dotted_field() -> None:
    fields = Fields({"dims": {"dim": 8, "flag": True}, "n": 1.5}, "manifest.json", "X", Refused)
    assert fields.section("dims").get("dim", int) == 8
    with pytest.raises(Refused, match=r"X: manifest\.json has no field dims\.tensors"):
        fields.section("dims").get("tensors", dict)
    with pytest.raises(Refused, match=r"field dims\.flag is bool True, expected int"):
        fields.section("dims").get("flag", int)
    with pytest.raises(Refused, match=r"field n is float 1\.5, expected dict"):
        fields.section("n")
    assert fields.get("n", (int, float)) == 1.5
