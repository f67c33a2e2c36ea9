"""GDELT-GEORGIA: built through the ingest path, loadable as a TKG benchmark, exact and stable."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from services.ingest import gdelt_schema as gs
from services.ingest.datasets import (
    GEORGIA_SOURCE,
    OUTPUT_FILES,
    DatasetError,
    DatasetSummary,
    SplitSpan,
    build_gdelt_georgia,
    main,
    split_bounds,
)
from shared.manifest import file_sha256
from shared.tkg_dataset import load_tkg

# Observed once with `build_gdelt_georgia(<team data>/gdelt/v1/undp_georgia_bigquery_csv, out)`
# (default mapping and 0.1/0.1 fractions) and written here so any change to the reader, the
# mapping, the store or the split shows up. 69,437 rows read; 36,710 have no Actor1Code or no
# Actor2Code; 32,727 quadruples; GLOBALEVENTID 233609230 occurs in july2011.csv and, with other
# content, in mar2012.csv: the store keeps the first (july, name order), 32,726 stored; 6,857 of
# them repeat an (s, r, o, day) and are merged, 25,869 facts. 2011-06-01..2012-05-31 is 366 days:
# 37 test, 37 valid, 292 train.
GEORGIA_ROWS = 69_437
GEORGIA_SPLITS = {
    "train": SplitSpan(0, 291, 19_997),
    "valid": SplitSpan(292, 328, 2_912),
    "test": SplitSpan(329, 365, 2_960),
}
GEORGIA_ENTITIES = 949
GEORGIA_RELATIONS = 20
GEORGIA_EVENTS = 32_726
GEORGIA_DUPLICATE_FACTS = 6_857


@pytest.fixture(scope="module")
def georgia_source(shared_data: Path) -> Path:
    source = shared_data / GEORGIA_SOURCE
    if not source.is_dir():
        pytest.skip(f"{source} not in the team data folder")
    return source


@pytest.fixture(scope="module")
def georgia(georgia_source: Path, tmp_path_factory) -> DatasetSummary:
    return build_gdelt_georgia(georgia_source, tmp_path_factory.mktemp("ds") / "GDELT-GEORGIA")


def test_georgia_counts_are_exact(georgia: DatasetSummary) -> None:
    assert georgia.name == "GDELT-GEORGIA"
    assert dict(georgia.splits) == GEORGIA_SPLITS
    assert (georgia.num_entities, georgia.num_relations) == (GEORGIA_ENTITIES, GEORGIA_RELATIONS)
    assert georgia.num_steps == 366 and georgia.first_day == date(2011, 6, 1)
    assert georgia.events_stored == GEORGIA_EVENTS
    assert georgia.duplicate_facts == GEORGIA_DUPLICATE_FACTS
    assert georgia.num_facts == GEORGIA_EVENTS - GEORGIA_DUPLICATE_FACTS


def test_georgia_loads_back_as_a_tkg_benchmark(georgia: DatasetSummary) -> None:
    dataset = load_tkg(georgia.out_dir)
    assert dataset.name == "GDELT-GEORGIA"
    assert {s: len(f) for s, f in dataset.splits.items()} == {
        s: span.facts for s, span in GEORGIA_SPLITS.items()
    }
    assert (dataset.num_entities, dataset.num_relations) == (GEORGIA_ENTITIES, GEORGIA_RELATIONS)
    assert (dataset.time_unit, dataset.time_step, dataset.step_minutes) == ("day", 1, 1440)
    assert dataset.relation_names == [f"{code:02d}" for code in range(1, 21)]
    assert dataset.entity_names == sorted(dataset.entity_names)
    assert {"GEO", "RUS", "USA"} <= set(dataset.entity_names)


def test_georgia_splits_are_chronological_and_free_of_repeated_facts(
    georgia: DatasetSummary,
) -> None:
    splits = load_tkg(georgia.out_dir).splits
    train, valid, test = (splits[s][:, 3] for s in ("train", "valid", "test"))
    assert train.min() == 0
    assert train.max() < valid.min() <= valid.max() < test.min() <= test.max() == 365
    for split, facts in splits.items():
        assert len(np.unique(facts, axis=0)) == len(facts), split
        order = np.lexsort(facts[:, [2, 1, 0, 3]].T)  # last key first: by t, then s, r, o
        assert (order == np.arange(len(facts))).all(), split


def test_georgia_manifest_names_sources_mapping_and_boundaries(
    georgia: DatasetSummary, georgia_source: Path
) -> None:
    manifest = json.loads((georgia.out_dir / "dataset.json").read_text())
    files = manifest["source"]["files"]
    assert [f["file"] for f in files] == sorted(p.name for p in georgia_source.glob("*.csv"))
    for record in files:
        assert record["sha256"] == file_sha256(georgia_source / record["file"])
    assert sum(f["rows_read"] for f in files) == manifest["counts"]["rows_read"] == GEORGIA_ROWS
    assert manifest["mapping"]["relation_level"] == "root"
    assert manifest["time"] == {**manifest["time"], "t0": "2011-06-01", "num_steps": 366}
    assert manifest["split"]["test"] == {
        "first_t": 329,
        "last_t": 365,
        "first_day": "2012-04-25",
        "last_day": "2012-05-31",
        "facts": 2_960,
    }
    assert manifest["split"]["train"]["last_day"] == "2012-03-18"
    assert manifest["relation_labels"]["04"] == "CONSULT"


def test_georgia_rebuild_is_refused_then_identical_with_overwrite(
    georgia: DatasetSummary, georgia_source: Path
) -> None:
    before = {name: (georgia.out_dir / name).read_bytes() for name in OUTPUT_FILES}
    with pytest.raises(DatasetError, match="already holds a build"):
        build_gdelt_georgia(georgia_source, georgia.out_dir)
    again = build_gdelt_georgia(georgia_source, georgia.out_dir, overwrite=True)
    assert again == georgia
    assert {name: (georgia.out_dir / name).read_bytes() for name in OUTPUT_FILES} == before


# --------------------------------------------------------------------- without team data


def v1_line(event_id: int, day: str, actor1: str, actor2: str, root: str) -> str:
    """A GDELT 1.0 daily-update row (58 tab-separated fields) with the fields the mapping reads."""
    values = {
        "GLOBALEVENTID": str(event_id),
        "SQLDATE": day,
        "Actor1Code": actor1,
        "Actor2Code": actor2,
        "IsRootEvent": "1",
        "EventCode": f"{root}0",
        "EventBaseCode": f"{root}0",
        "EventRootCode": root,
        "QuadClass": "1",
        "GoldsteinScale": "1.0",
        "NumMentions": "2",
        "DATEADDED": day,
    }
    return "\t".join(values.get(name, "") for name in gs.V1_COLUMNS)


@pytest.fixture
def tiny_source(tmp_path: Path) -> Path:
    """Ten days of events in two files; day 1 repeats one fact under another event id."""
    source = tmp_path / "src"
    source.mkdir()
    lines = [v1_line(100 + d, f"202001{d + 1:02d}", "USA", "RUS", "04") for d in range(10)]
    lines.append(v1_line(200, "20200102", "USA", "RUS", "04"))  # same fact, same day: merged
    lines.append(v1_line(201, "20200102", "RUS", "USA", "04"))  # reversed: a different fact
    lines.append(v1_line(202, "20200103", "GEO", "", "01"))  # no object: filtered by the mapping
    (source / "a.export.CSV").write_text("\n".join(lines[:5]) + "\n")
    (source / "b.export.CSV").write_text("\n".join(lines[5:]) + "\n")
    (source / "SOURCE.md").write_text("not an export\n")
    return source


def test_tiny_build_merges_repeated_facts_and_splits_by_day(tiny_source: Path, tmp_path: Path):
    summary = build_gdelt_georgia(tiny_source, tmp_path / "out")
    assert summary.events_stored == 12 and summary.duplicate_facts == 1
    assert dict(summary.splits) == {
        "train": SplitSpan(0, 7, 9),
        "valid": SplitSpan(8, 8, 1),
        "test": SplitSpan(9, 9, 1),
    }
    out = tmp_path / "out"
    assert (out / "entity2id.txt").read_text() == "RUS\t0\nUSA\t1\n"
    assert (out / "relation2id.txt").read_text() == "04\t0\n"
    assert (out / "stat.txt").read_text() == "2\t1\n"
    assert (out / "train.txt").read_text().splitlines()[:3] == [
        "1\t0\t0\t0",
        "0\t0\t1\t1",
        "1\t0\t0\t1",
    ]
    assert (out / "test.txt").read_text() == "1\t0\t0\t9\n"


def test_split_bounds() -> None:
    assert split_bounds(366, 0.1, 0.1) == {
        "train": range(0, 292),
        "valid": range(292, 329),
        "test": range(329, 366),
    }
    assert split_bounds(3, 0.1, 0.1) == {
        "train": range(0, 1),
        "valid": range(1, 2),
        "test": range(2, 3),
    }
    with pytest.raises(DatasetError, match="at least one step"):
        split_bounds(2, 0.1, 0.1)
    with pytest.raises(ValueError, match="sum below 1"):
        split_bounds(100, 0.5, 0.5)


def test_split_without_facts_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    days = ["20200101", "20200102", "20200110"]  # days 2..8 empty: valid (day 8) has no fact
    lines = [v1_line(i, day, "USA", "RUS", "04") for i, day in enumerate(days, start=1)]
    (source / "a.CSV").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="valid split .* holds no fact"):
        build_gdelt_georgia(source, tmp_path / "out")


def test_cli_builds_and_reports_missing_source(tiny_source: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["gdelt-georgia", "--source", str(tiny_source), "--out", str(out)]) == 0
    assert "2 entities, 1 relations, 10 days" in capsys.readouterr().out
    assert load_tkg(out).name == "cli"
    assert main(["gdelt-georgia", "--source", str(tiny_source), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    missing = tmp_path / "absent"
    assert main(["gdelt-georgia", "--source", str(missing), "--out", str(out)]) == 2
    assert f"source folder not found: {missing}" in capsys.readouterr().err


def test_cli_default_source_follows_geopol_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("GEOPOL_DATA_DIR", str(tmp_path / "team"))
    assert main(["gdelt-georgia", "--out", str(tmp_path / "out")]) == 2
    assert str(tmp_path / "team" / GEORGIA_SOURCE) in capsys.readouterr().err
