"""Vocabulary: append-only ids, TSV round trip, validation that names file and line."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shared.store_vocab import HEADER, Vocabulary, VocabularyError, first_appearance


def test_ids_follow_first_appearance_and_survive_save_load(tmp_path: Path) -> None:
    vocab = Vocabulary()
    ids = vocab.add(["USAGOV", "CHN", "USAGOV", "RUSMIL", "CHN"])
    assert ids.tolist() == [0, 1, 0, 2, 1]
    assert ids.dtype == np.int64
    path = tmp_path / "entities.tsv"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded.keys() == ["USAGOV", "CHN", "RUSMIL"]
    assert loaded.ids(["RUSMIL", "USAGOV"]).tolist() == [2, 0]
    assert loaded.sha256() == vocab.sha256()


def test_second_batch_keeps_old_ids_and_appends_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "entities.tsv"
    first = Vocabulary()
    first.add(["A", "B", "C"])
    first.save(path)
    second = Vocabulary.load(path)
    ids = second.add(pl.Series(["D", "B", "E", "A", "D"]))
    assert ids.tolist() == [3, 1, 4, 0, 3]
    second.save(path)
    assert Vocabulary.load(path).keys() == ["A", "B", "C", "D", "E"]


def test_add_100k_keys_in_order() -> None:
    keys = [f"K{i:06d}" for i in range(100_000)]
    vocab = Vocabulary()
    assert np.array_equal(vocab.add(keys + keys[:10]), np.r_[np.arange(100_000), np.arange(10)])
    assert np.array_equal(vocab.ids(keys[::-1]), np.arange(100_000)[::-1])


def test_series_lookups_match_list_lookups() -> None:
    keys = ["B", "A", "C", "A", "B", "D"]
    from_list, from_series = Vocabulary(["D"]), Vocabulary(["D"])
    assert from_series.add(pl.Series(keys)).tolist() == from_list.add(keys).tolist()
    assert from_series.keys() == from_list.keys() == ["D", "B", "A", "C"]
    assert from_series.ids(pl.Series(keys[::-1])).tolist() == [0, 1, 2, 3, 2, 1]
    assert from_series.ids(pl.Series([], dtype=pl.String)).tolist() == []
    with pytest.raises(KeyError, match="'Y'"):  # the first unknown key in order, not any
        from_series.ids(pl.Series(["A", "Y", "Z", "Y"]))


@pytest.mark.parametrize("bad", ["has\ttab", "", None])
def test_series_keys_that_would_break_the_tsv_are_rejected(bad: str | None) -> None:
    vocab = Vocabulary(["A"])
    with pytest.raises(VocabularyError):
        vocab.add(pl.Series(["B", bad], dtype=pl.String))


def test_first_appearance_reads_rows_left_to_right() -> None:
    frame = pl.DataFrame({"s": ["X", "Z", "W", "X"], "o": ["Y", "X", "V", "Q"]})
    assert first_appearance(frame, ["s", "o"]).to_list() == ["X", "Y", "Z", "W", "V", "Q"]
    assert first_appearance(frame, ["o", "s"]).to_list() == ["Y", "X", "Z", "V", "W", "Q"]
    assert first_appearance(frame, ["s"]).to_list() == ["X", "Z", "W"]
    assert first_appearance(frame.clear(), ["s", "o"]).to_list() == []


def test_oov_rate_counts_keys_as_given() -> None:
    vocab = Vocabulary(["A", "B"])
    assert vocab.oov_rate(["A", "C", "C", "D"]) == 0.75
    assert vocab.oov_rate(["A", "B"]) == 0.0
    assert vocab.oov_rate([]) == 0.0


def test_unknown_key_lookup_names_the_key() -> None:
    with pytest.raises(KeyError, match="'ZZZ'"):
        Vocabulary(["A"]).ids(["A", "ZZZ"])


def test_labels_fill_missing_but_never_overwrite(tmp_path: Path) -> None:
    vocab = Vocabulary(["USA"], labels={"USA": "United States"})
    vocab.add(["USA", "CHN"], labels={"USA": "Something else", "CHN": "China", "XXX": "ignored"})
    assert (vocab.label("USA"), vocab.label("CHN")) == ("United States", "China")
    assert "XXX" not in vocab
    vocab.save(tmp_path / "v.tsv")
    assert Vocabulary.load(tmp_path / "v.tsv").label("CHN") == "China"


def test_sha256_is_the_file_hash_and_tracks_content(tmp_path: Path) -> None:
    vocab = Vocabulary(["A", "B"])
    vocab.save(tmp_path / "v.tsv")
    assert vocab.sha256() == hashlib.sha256((tmp_path / "v.tsv").read_bytes()).hexdigest()
    before = vocab.sha256()
    vocab.add(["C"])
    assert vocab.sha256() != before


def test_prefix_is_the_earlier_state() -> None:
    vocab = Vocabulary(["A", "B", "C"], labels={"B": "bee"})
    head = vocab.prefix(2)
    assert head.keys() == ["A", "B"] and head.label("B") == "bee"
    assert head.add(["Z"]).tolist() == [2]
    assert vocab.keys() == ["A", "B", "C"]  # the original is untouched


@pytest.mark.parametrize("bad", ["has\ttab", "line\nbreak", "", None])
def test_keys_that_would_break_the_tsv_are_rejected(bad: object) -> None:
    vocab = Vocabulary(["A"])
    with pytest.raises(VocabularyError):
        vocab.add(["B", bad])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        (f"{HEADER}\n0\tA\t\n2\tB\t\n", 3, "id '2' where 1 was expected"),
        (f"{HEADER}\n0\tA\t\n1\tA\tdup\n", 3, "duplicate key 'A' (first at line 2)"),
        (f"{HEADER}\n0\tA\t\n1\tB\n", 3, "expected 3 tab-separated fields, got 2"),
        (f"{HEADER}\n0\t\tlabel\n", 2, "empty key"),
        ("id\tname\n0\tA\t\n", 1, "expected header"),
        (f"{HEADER}\n0\tA\t\n1\tB", 3, "no newline"),
    ],
)
def test_corrupt_tsv_is_rejected_naming_file_and_line(
    tmp_path: Path, body: str, line: int, reason: str
) -> None:
    path = tmp_path / "entities.tsv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(VocabularyError) as err:
        Vocabulary.load(path)
    assert f"{path}:{line}:" in str(err.value)
    assert reason in str(err.value)


def test_failed_save_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v.tsv"
    Vocabulary(["A"]).save(path)
    old = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk went away"):
        Vocabulary(["A", "B"]).save(path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.tsv"]
