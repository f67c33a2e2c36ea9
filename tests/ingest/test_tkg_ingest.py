"""Loading a TKG benchmark into the event store keeps its original ids, splits and time steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.ingest.tkg_ingest import ingest_tkg
from shared.event_store import EventStore
from shared.tkg_dataset import TkgFormatError, load_tkg


def write(directory: Path, files: dict[str, str], newline: str = "\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_bytes(text.replace("\n", newline).encode("utf-8"))
    return directory


HOURLY = {
    "train.txt": "2 0 1 0 -1\n1 1 0 24 -1\n",
    "valid.txt": "2\t0\t0\t48\t-1\n",
    "test.txt": "0  1   2 96 -1\n\n",
}


def test_ingest_keeps_original_ids_and_splits(tmp_path: Path, shared_data: Path) -> None:
    directory = shared_data / "tkg" / "ICEWS14"
    if not directory.is_dir():
        pytest.skip(f"no TKG benchmark at {directory}")
    icews14 = load_tkg(directory)
    store = ingest_tkg(directory, tmp_path / "icews14")
    assert store.step_minutes == 1440
    assert store.entities.keys() == icews14.entity_names
    assert store.relations.keys() == icews14.relation_names
    assert store.entities.label("Barack_Obama") == "Barack Obama"
    for split, facts in icews14.splits.items():
        stored = store.scan(split=split).select("subject", "relation", "object", "t").to_numpy()
        assert np.array_equal(stored[np.lexsort(stored.T[::-1])], facts[np.lexsort(facts.T[::-1])])
    assert store.steps() == list(range(1, 366))
    again = ingest_tkg(directory, tmp_path / "icews14")  # unchanged files: no-op
    assert again.scan().height == sum(len(facts) for facts in icews14.splits.values())


def test_store_ids_are_benchmark_ids_and_t_is_the_step_index(tmp_path: Path) -> None:
    store = ingest_tkg(write(tmp_path / "tiny", HOURLY, newline="\r\n"), tmp_path / "store")
    assert store.entities.keys() == ["0", "1", "2"]  # not first-appearance order (2, 1, 0)
    assert store.scan(split="test").select("subject", "object", "t").rows() == [(0, 2, 4)]


def test_id_files_fix_store_ids_even_for_unused_names(tmp_path: Path) -> None:
    files = {
        "train.txt": "2\t0\t1\t0\n",
        "valid.txt": "1\t0\t2\t1\n",
        "test.txt": "2\t0\t2\t2\n",
        "entity2id.txt": "Beta\t1\nAlpha\t0\nGamma\t2\nUnused\t3\n",
        "relation2id.txt": "Consult\t0\n",
    }
    store = ingest_tkg(write(tmp_path / "named", files), tmp_path / "store")
    assert store.entities.keys() == ["Alpha", "Beta", "Gamma", "Unused"]
    assert store.scan(split="train").select("subject", "object").rows() == [(2, 1)]


def test_ingest_refuses_a_store_holding_other_keys(tmp_path: Path) -> None:
    directory = write(tmp_path / "tiny", HOURLY)
    ingest_tkg(directory, tmp_path / "store")
    other = write(tmp_path / "other", {**HOURLY, "entity2id.txt": "X\t0\nY\t1\nZ\t2\n"})
    with pytest.raises(TkgFormatError, match="original ids would not be preserved"):
        ingest_tkg(other, tmp_path / "store")
    assert EventStore(tmp_path / "store", step_minutes=1440).entities.keys() == ["0", "1", "2"]
