"""TKG benchmark reader: real ICEWS counts and time units, tolerated quirks, precise errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.tkg_dataset import TkgDataset, TkgFormatError, display_names, load_tkg

# Counts and time ranges from <shared_data>/tkg/*/SOURCE.md.
REAL = {
    "ICEWS14": {
        "sizes": {"train": 74_845, "valid": 8_514, "test": 7_371},
        "entities": 7_128,
        "relations": 230,
        "unit": "day",
        "step": 1,
        "t_ranges": {"train": (1, 304), "valid": (305, 334), "test": (335, 365)},
    },
    "ICEWS14/nec-research_variant": {
        "sizes": {"train": 74_845, "valid": 8_514, "test": 7_371},
        "entities": 7_128,
        "relations": 230,
        "unit": "hour",
        "step": 24,
        "t_ranges": {"train": (0, 7272), "valid": (7296, 7992), "test": (8016, 8736)},
    },
    "ICEWS05-15": {
        "sizes": {"train": 368_868, "valid": 46_302, "test": 46_159},
        "entities": 10_488,
        "relations": 251,
        "unit": "day",
        "step": 1,
        "t_ranges": {"train": (0, 3242), "valid": (3243, 3646), "test": (3647, 4016)},
    },
}


@pytest.fixture(scope="module")
def tkg_dir(shared_data: Path) -> Path:
    path = shared_data / "tkg"
    if not (path / "ICEWS14").is_dir():
        pytest.skip(f"no TKG benchmarks under {path}")
    return path


@pytest.fixture(scope="module")
def icews14(tkg_dir: Path) -> TkgDataset:
    return load_tkg(tkg_dir / "ICEWS14")


@pytest.mark.parametrize("name", list(REAL))
def test_real_benchmarks_load_with_exact_counts_and_time_unit(tkg_dir: Path, name: str) -> None:
    expected = REAL[name]
    dataset = load_tkg(tkg_dir / name)
    assert {split: len(facts) for split, facts in dataset.splits.items()} == expected["sizes"]
    assert (dataset.num_entities, dataset.num_relations) == (
        expected["entities"],
        expected["relations"],
    )
    assert (dataset.time_unit, dataset.time_step) == (expected["unit"], expected["step"])
    assert dataset.step_minutes == 24 * 60  # one ICEWS step is a day in every encoding
    for split, (t_lo, t_hi) in expected["t_ranges"].items():
        facts = dataset.splits[split]
        assert facts.dtype == np.int64 and facts.shape[1] == 4
        assert (int(facts[:, 3].min()), int(facts[:, 3].max())) == (t_lo, t_hi)
        assert facts[:, [0, 2]].max() < dataset.num_entities
        assert facts[:, 1].max() < dataset.num_relations


def test_quote_debris_is_undone_so_both_icews14_encodings_hold_the_same_facts(
    tkg_dir: Path, icews14: TkgDataset
) -> None:
    nec = load_tkg(tkg_dir / "ICEWS14" / "nec-research_variant")
    assert icews14.entity_names[1680] == 'Nicholas_"Nick"_Xenophon'
    assert nec.entity_names[2342] == 'Nicholas_"Nick"_Xenophon'

    def named(dataset: TkgDataset, split: str, day_of: int, day_offset: int) -> list[tuple]:
        facts = dataset.splits[split]
        ents, rels = dataset.entity_names, dataset.relation_names
        return sorted(
            (ents[s], rels[r], ents[o], t // day_of - day_offset) for s, r, o, t in facts.tolist()
        )

    # SOURCE.md: main-folder day 1 is nec hour 0; ids are numbered differently.
    assert named(icews14, "test", 1, 1) == named(nec, "test", 24, 0)


# --------------------------------------------------------------------- synthetic layouts


def write(directory: Path, files: dict[str, str], newline: str = "\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_bytes(text.replace("\n", newline).encode("utf-8"))
    return directory


HOURLY = {
    "train.txt": "2 0 1 0 -1\n1 1 0 24 -1\n",
    "valid.txt": "2\t0\t0\t48\t-1\n",
    "test.txt": "0  1   2 96 -1\n\n",  # runs of spaces, a gap of two steps, a trailing blank line
}


def test_crlf_spaces_and_fifth_column_without_id_files(tmp_path: Path) -> None:
    directory = write(tmp_path / "tiny", HOURLY, newline="\r\n")
    dataset = load_tkg(directory)
    assert dataset.splits["train"].tolist() == [[2, 0, 1, 0], [1, 1, 0, 24]]
    assert dataset.splits["valid"].tolist() == [[2, 0, 0, 48]]
    assert dataset.splits["test"].tolist() == [[0, 1, 2, 96]]
    assert (dataset.time_unit, dataset.time_step, dataset.step_minutes) == ("hour", 24, 1440)
    assert dataset.entity_names == ["0", "1", "2"] and dataset.relation_names == ["0", "1"]


def test_id_files_with_crlf_fix_ids_even_for_unused_names(tmp_path: Path) -> None:
    files = {
        "train.txt": "2\t0\t1\t0\n",
        "valid.txt": "1\t0\t2\t1\n",
        "test.txt": "2\t0\t2\t2\n",
        "entity2id.txt": 'Beta\t1\n"Al ""A"" Pha"\t0\nGamma\t2\nUnused\t3\n',
        "relation2id.txt": "Consult\t0\n",
        "stat.txt": "4\t1",
    }
    directory = write(tmp_path / "named", files, newline="\r\n")
    dataset = load_tkg(directory)
    assert dataset.entity_names == ['Al "A" Pha', "Beta", "Gamma", "Unused"]
    assert dataset.time_unit == "day"
    assert dataset.splits["train"].tolist() == [[2, 0, 1, 0]]


def test_display_names_come_from_label_files_else_from_names_with_spaces(tmp_path: Path) -> None:
    files = {
        **GOOD,
        "entity2id.txt": "USA_GOV\t0\nUSA_MIL\t1\n",
        "relation2id.txt": "Make_a_visit\t0\n",
    }
    plain = load_tkg(write(tmp_path / "plain", files))
    assert display_names(plain) == {
        "entities": ["USA GOV", "USA MIL"],
        "relations": ["Make a visit"],
    }
    labels = {"entity2label.txt": "United States\t1\nUnited States\t0\n"}  # labels may repeat
    labelled = load_tkg(write(tmp_path / "labelled", {**files, **labels}))
    assert display_names(labelled)["entities"] == ["United States", "United States"]
    assert display_names(labelled)["relations"] == ["Make a visit"]
    short = load_tkg(write(tmp_path / "short", {**files, "relation2label.txt": ""}))
    with pytest.raises(TkgFormatError, match="relation2label.txt: 0 labels, but the dataset has 1"):
        display_names(short)


GOOD = {
    "train.txt": "0\t0\t1\t0\n1\t0\t0\t1\n",
    "valid.txt": "0\t0\t1\t2\n",
    "test.txt": "1\t0\t0\t3\n",
}
NAMES = {"entity2id.txt": "A\t0\nB\t1\n", "relation2id.txt": "r\t0\n"}


@pytest.mark.parametrize(
    ("files", "where", "reason"),
    [
        ({"train.txt": "0\t0\t1\t0\n1\t0\t0\n"}, "train.txt:2:", "expected 4 fields"),
        ({"valid.txt": "0\t0\t1\t2\n0 0 1 2 -1 9\n"}, "valid.txt:2:", "got 6"),
        ({"test.txt": "\n1\t0\tx\t3\n"}, "test.txt:2:", "field 3 'x' is not an integer"),
        ({"test.txt": "1\t0\t2\t3\n"}, "test.txt:1:", "object id 2 is outside 0..1"),
        ({"train.txt": "0\t1\t1\t0\n"}, "train.txt:1:", "relation id 1 is outside 0..0"),
        ({"entity2id.txt": "A\t0\nB 1\n"}, "entity2id.txt:2:", "expected 'name<TAB>id'"),
        ({"entity2id.txt": "A\t0\nB\tone\n"}, "entity2id.txt:2:", "is not a non-negative integer"),
        ({"entity2id.txt": "A\t0\nB\t0\n"}, "entity2id.txt:2:", "id 0 appears twice"),
        ({"entity2id.txt": "A\t0\nA\t1\n"}, "entity2id.txt:2:", "repeats line 1"),
        ({"entity2id.txt": "A\t0\nB\t2\n"}, "entity2id.txt:", "id 1 is missing"),
        ({"stat.txt": "3\t1"}, "stat.txt:1:", "says 3 but"),
    ],
)
def test_malformed_input_is_reported_with_file_and_line(
    tmp_path: Path, files: dict[str, str], where: str, reason: str
) -> None:
    directory = write(tmp_path / "bad", {**GOOD, **NAMES, **files})
    with pytest.raises(TkgFormatError) as err:
        load_tkg(directory)
    assert f"{directory}/{where}" in str(err.value)
    assert reason in str(err.value)


def test_unknown_time_step_needs_an_explicit_unit(tmp_path: Path) -> None:
    weekly = {
        "train.txt": "0\t0\t1\t0\n1\t0\t0\t7\n",
        "valid.txt": "0\t0\t1\t14\n",
        "test.txt": "1\t0\t0\t21\n",
    }
    directory = write(tmp_path / "weekly", weekly)
    with pytest.raises(TkgFormatError, match=r"weekly: cannot tell the time unit from a step of 7"):
        load_tkg(directory)
    dataset = load_tkg(directory, time_unit="day")
    assert (dataset.time_step, dataset.step_minutes) == (7, 7 * 1440)


def test_negative_id_without_id_files(tmp_path: Path) -> None:
    directory = write(tmp_path / "neg", {**GOOD, "valid.txt": "0\t-1\t1\t2\n"})
    with pytest.raises(TkgFormatError, match=r"valid.txt:1: relation id -1 must not be negative"):
        load_tkg(directory)


def test_missing_split_file(tmp_path: Path) -> None:
    directory = write(tmp_path / "partial", {"train.txt": GOOD["train.txt"]})
    with pytest.raises(TkgFormatError, match="missing valid.txt"):
        load_tkg(directory)
