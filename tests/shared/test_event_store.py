"""EventStore: idempotent ingest, event-id dedupe, crash safety, disk floor, stats, read side."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from structlog.testing import capture_logs

from shared import event_store as store_module
from shared.event_store import (
    STORED_SCHEMA,
    ClosedStepError,
    DiskFloorError,
    EventStore,
    IngestStats,
    KeyLabels,
    StoreError,
)

Row = tuple[int | None, str, str, str, int]  # event_id, subject, relation, object, t

SOURCE_A: list[Row] = [(1, "USA", "01", "CHN", 0), (2, "CHN", "02", "USA", 0)]
# B repeats event 2, adds events 3 and 4 with new entities at two new steps.
SOURCE_B: list[Row] = [
    (2, "CHN", "02", "USA", 0),
    (3, "RUS", "01", "UKR", 1),
    (4, "UKR", "03", "USA", 2),
]
# C shares a new entity with B (UKR) and adds its own (TUR), at B's step 1.
SOURCE_C: list[Row] = [(5, "TUR", "01", "UKR", 1)]


def quads(rows: list[Row], split: str | None = None) -> pl.DataFrame:
    """A batch in the reader contract (services/ingest/mapping.py output)."""
    event_id, subject, relation, obj, t = (list(column) for column in zip(*rows, strict=True))
    frame = pl.DataFrame(
        {
            "event_id": pl.Series(event_id, dtype=pl.Int64),
            "subject": subject,
            "relation": relation,
            "object": obj,
            "t": pl.Series(t, dtype=pl.Int64),
            "goldstein": pl.Series([1.5] * len(rows), dtype=pl.Float64),
            "num_mentions": pl.Series([3] * len(rows), dtype=pl.Int64),
            "quad_class": pl.Series([1] * len(rows), dtype=pl.Int8),
        }
    )
    return frame if split is None else frame.with_columns(split=pl.lit(split))


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def ingest(store: EventStore, name: str, rows: list[Row]) -> IngestStats:
    return store.append(quads(rows), source=name, source_sha256=sha(name))


def decoded(store: EventStore) -> list[Row]:
    """Stored rows with ids mapped back to keys, sorted: what a reader would see."""
    ents, rels = store.entities, store.relations
    frame = store.scan()
    return sorted(
        (eid, ents.key(s), rels.key(r), ents.key(o), t)
        for eid, s, r, o, t in frame.select(
            "event_id", "subject", "relation", "object", "t"
        ).iter_rows()
    )


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def commit_lines(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "ingested.jsonl").read_text().splitlines()]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_reingesting_the_same_source_adds_nothing(root: Path) -> None:
    store = EventStore(root, step_minutes=15)
    first = ingest(store, "a.csv", SOURCE_A)
    before = tree(root)
    again = ingest(store, "a.csv", SOURCE_A)
    assert first.kept == 2 and not first.already_ingested
    assert again.already_ingested and again.kept == 0 and again.rows_in == 2
    assert tree(root) == before
    reopened = EventStore(root, step_minutes=15)
    renamed = reopened.append(quads(SOURCE_A), source="renamed.csv", source_sha256=sha("a.csv"))
    assert renamed.already_ingested  # same content under another name
    assert len(commit_lines(root)) == 1


def test_event_ids_are_deduplicated_across_sources_and_reopen(root: Path) -> None:
    store = EventStore(root, step_minutes=15)
    ingest(store, "a", SOURCE_A)
    stats_b = ingest(store, "b", SOURCE_B + [(4, "UKR", "03", "USA", 2)])  # 4 twice in-batch
    assert (stats_b.rows_in, stats_b.kept, stats_b.duplicates_dropped) == (4, 2, 2)
    reopened = EventStore(root, step_minutes=15)  # the seen set comes from disk
    stats_c = ingest(reopened, "c", [(1, "USA", "01", "CHN", 5), (99, "USA", "01", "CHN", 5)])
    assert (stats_c.kept, stats_c.duplicates_dropped) == (1, 1)
    assert sorted(reopened.scan()["event_id"].to_list()) == [1, 2, 3, 4, 99]
    assert (root / "event_ids.i64").stat().st_size == 5 * 8


def test_rows_without_event_id_are_never_deduplicated(root: Path) -> None:
    store = EventStore(root, step_minutes=1440)
    fact: Row = (None, "A", "r", "B", 3)
    ingest(store, "train", [fact, fact])
    ingest(store, "valid", [fact])
    assert store.scan().height == 3


def test_entity_ids_are_stable_across_two_ingests(root: Path) -> None:
    store = EventStore(root, step_minutes=15)
    ingest(store, "a", SOURCE_A)
    ids_before = store.entities.ids(["USA", "CHN"]).tolist()
    ingest(store, "b", SOURCE_B)
    reopened = EventStore(root, step_minutes=15)
    assert reopened.entities.ids(["USA", "CHN", "RUS", "UKR"]).tolist() == ids_before + [2, 3]
    assert reopened.relations.keys() == ["01", "02", "03"]
    assert decoded(reopened) == sorted(SOURCE_A + SOURCE_B[1:])


def test_stats_are_exact_on_a_hand_made_batch(root: Path) -> None:
    store = EventStore(root, step_minutes=15)
    ingest(store, "a", [(1, "A", "01", "B", 0)])
    batch: list[Row] = [
        (10, "A", "01", "C", 1),
        (11, "C", "02", "D", 1),
        (11, "C", "02", "D", 1),  # duplicate within the batch
        (1, "F", "01", "A", 2),  # event 1 is already stored: dropped, F never enters the vocab
        (None, "E", "01", "A", 2),
    ]
    with capture_logs() as logs:
        stats = store.append(
            quads(batch),
            source="b",
            source_sha256=sha("b"),
            read_stats={"quarantined": 4, "non_root": 7},
        )
    # Distinct entities in: A C D F E; unknown before the batch: C D F E.
    assert stats.entity_oov_rate == pytest.approx(4 / 5)
    assert (stats.rows_in, stats.kept, stats.duplicates_dropped) == (5, 3, 2)
    assert (stats.new_entities, stats.new_relations, stats.steps_written) == (3, 1, 2)
    assert stats.top_relations == {"01": 2, "02": 1}
    assert stats.read_stats == {"quarantined": 4, "non_root": 7}
    assert store.entities.keys() == ["A", "B", "C", "D", "E"]  # row-major first appearance
    saved = json.loads((root / "stats" / f"{sha('b')[:16]}.json").read_text())
    assert saved == stats.as_dict()
    assert commit_lines(root)[-1]["stats"] == stats.as_dict()
    done = [entry for entry in logs if entry["event"] == "ingest_done"]
    assert len(done) == 1 and done[0]["kept"] == 3 and done[0]["read_stats"]["quarantined"] == 4


def test_labels_register_keys_first_in_mapping_order(root: Path) -> None:
    store = EventStore(root, step_minutes=15)
    labels = KeyLabels(entities={"Z": "Zed", "USA": "United States"}, relations={"02": "Appeal"})
    stats = store.append(quads(SOURCE_A), source="a", source_sha256=sha("a"), labels=labels)
    assert store.entities.keys() == ["Z", "USA", "CHN"]
    assert store.relations.keys() == ["02", "01"]
    assert store.entities.label("USA") == "United States" and store.entities.label("CHN") is None
    assert stats.new_entities == 3


def test_keys_the_labels_lack_follow_in_row_major_order(root: Path) -> None:
    store = EventStore(root, step_minutes=15)
    labels = KeyLabels(entities={"Z": "Zed"}, relations={"03": "Three"})
    batch: list[Row] = [(1, "X", "02", "Y", 0), (2, "Z", "01", "X", 0), (3, "W", "03", "V", 1)]
    store.append(quads(batch), source="a", source_sha256=sha("a"), labels=labels)
    assert store.entities.keys() == ["Z", "X", "Y", "W", "V"]
    assert store.relations.keys() == ["03", "02", "01"]
    assert decoded(store) == sorted(batch)


def test_event_ids_in_any_order_are_deduplicated(root: Path) -> None:
    store = EventStore(root, step_minutes=15)
    ingest(store, "a", [(9, "A", "01", "B", 0), (3, "A", "01", "B", 0), (7, "B", "01", "A", 0)])
    stats = ingest(
        store, "b", [(8, "A", "01", "B", 0), (7, "A", "01", "B", 0), (3, "C", "01", "B", 0)]
    )
    assert (stats.kept, stats.duplicates_dropped) == (1, 2)
    reopened = EventStore(root, step_minutes=15)
    again = ingest(reopened, "c", [(9, "A", "01", "B", 0), (1, "A", "01", "B", 0)])
    assert (again.kept, again.duplicates_dropped) == (1, 1)
    assert [row[0] for row in decoded(reopened)] == [1, 3, 7, 8, 9]


# --------------------------------------------------------------------- crash safety

REPLACES_PER_INGEST_B = 6  # pending.json, parts t=1 and t=2, entities, relations, stats


def _fail_replace_at(monkeypatch: pytest.MonkeyPatch, fail_at: int) -> dict[str, int]:
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    return calls


def test_ingest_b_has_the_expected_write_points(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(EventStore(root, step_minutes=15), "a", SOURCE_A)
    calls = _fail_replace_at(monkeypatch, fail_at=0)
    ingest(EventStore(root, step_minutes=15), "b", SOURCE_B)
    assert calls["n"] == REPLACES_PER_INGEST_B  # so the crash test below hits every write


@pytest.mark.parametrize("fail_at", range(1, REPLACES_PER_INGEST_B + 1))
def test_crash_at_any_replace_then_rerun_gives_exactly_the_right_rows(
    root: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    ingest(EventStore(root, step_minutes=15), "a", SOURCE_A)
    _fail_replace_at(monkeypatch, fail_at)
    with pytest.raises(OSError, match="simulated crash"):
        ingest(EventStore(root, step_minutes=15), "b", SOURCE_B)
    monkeypatch.undo()
    assert not list(root.rglob("*.tmp"))
    after_crash = EventStore(root, step_minutes=15)
    assert decoded(after_crash) == sorted(SOURCE_A)  # nothing of b is visible
    assert after_crash.num_entities == 2
    stats = ingest(EventStore(root, step_minutes=15), "b", SOURCE_B)
    final = EventStore(root, step_minutes=15)
    assert (stats.kept, stats.new_entities) == (2, 2)
    assert decoded(final) == sorted(SOURCE_A + SOURCE_B[1:])
    assert [line["source"] for line in commit_lines(root)] == ["a", "b"]
    assert not (root / "pending.json").exists()
    assert (root / "event_ids.i64").stat().st_size == 4 * 8
    parts = sorted(str(p.relative_to(root)) for p in root.glob("quads/*/*.parquet"))
    assert parts == [
        f"quads/t=0/part-{sha('a')[:16]}.parquet",
        f"quads/t=1/part-{sha('b')[:16]}.parquet",
        f"quads/t=2/part-{sha('b')[:16]}.parquet",
    ]


def test_crash_then_another_source_then_rerun(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ingest(EventStore(root, step_minutes=15), "a", SOURCE_A)
    _fail_replace_at(monkeypatch, fail_at=3)  # part t=1 landed, part t=2 failed
    with pytest.raises(OSError):
        ingest(EventStore(root, step_minutes=15), "b", SOURCE_B)
    monkeypatch.undo()
    orphan = root / "quads" / "t=1" / f"part-{sha('b')[:16]}.parquet"
    assert orphan.exists()
    store = EventStore(root, step_minutes=15)
    assert store.snapshot(1).shape == (0, 3)  # readers never see uncommitted parts
    ingest(store, "c", SOURCE_C)  # recovery removes the orphan; UKR now gets its id from c
    assert not orphan.exists()
    assert store.entities.keys() == ["USA", "CHN", "TUR", "UKR"]
    ingest(store, "b", SOURCE_B)
    assert decoded(EventStore(root, step_minutes=15)) == sorted(SOURCE_A + SOURCE_C + SOURCE_B[1:])


def test_interrupted_commit_line_is_rolled_back(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(EventStore(root, step_minutes=15), "a", SOURCE_A)
    real_append = store_module._append_bytes

    def torn_append(path: Path, data: bytes) -> None:
        if path.name == "ingested.jsonl":  # power cut half way through the commit line
            real_append(path, data[: len(data) // 2])
            raise OSError("simulated crash")
        real_append(path, data)

    monkeypatch.setattr(store_module, "_append_bytes", torn_append)
    with pytest.raises(OSError):
        ingest(EventStore(root, step_minutes=15), "b", SOURCE_B)
    monkeypatch.undo()
    assert (root / "event_ids.i64").stat().st_size == 4 * 8  # b's ids appended, not committed
    assert decoded(EventStore(root, step_minutes=15)) == sorted(SOURCE_A)
    stats = ingest(EventStore(root, step_minutes=15), "b", SOURCE_B)
    assert stats.kept == 2  # b's half-written ids were truncated, not treated as seen
    assert [line["source"] for line in commit_lines(root)] == ["a", "b"]
    assert (root / "event_ids.i64").stat().st_size == 4 * 8


def test_pending_record_of_a_committed_ingest_keeps_its_parts(root: Path) -> None:
    """A crash after the commit line but before pending.json was removed loses nothing."""
    store = EventStore(root, step_minutes=15)
    ingest(store, "a", SOURCE_A)
    ingest(store, "b", SOURCE_B)
    pending = {"source": "b", "sha256": sha("b"), "part": sha("b")[:16], "steps": [1, 2]}
    (root / "pending.json").write_text(json.dumps(pending))
    ingest(store, "c", SOURCE_C)
    assert not (root / "pending.json").exists()
    assert decoded(EventStore(root, step_minutes=15)) == sorted(SOURCE_A + SOURCE_B[1:] + SOURCE_C)


# --------------------------------------------------------------------- disk floor and opening

DiskUsage = namedtuple("DiskUsage", "total used free")


def test_disk_floor_refuses_before_writing_anything(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EventStore(root, step_minutes=15, min_free_bytes=10_000)
    ingest(store, "a", SOURCE_A)
    before = tree(root)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(DiskFloorError) as err:
        ingest(store, "b", SOURCE_B)
    assert str(root) in str(err.value)
    assert "4096 bytes free" in str(err.value) and "floor of 10000 bytes" in str(err.value)
    assert tree(root) == before
    new_root = root.parent / "other"
    with pytest.raises(DiskFloorError):
        EventStore(new_root, step_minutes=15, min_free_bytes=10_000)
    assert not new_root.exists()


def test_reopening_with_another_step_names_both_values(root: Path) -> None:
    EventStore(root, step_minutes=15)
    with pytest.raises(StoreError, match=r"step_minutes=15.*step_minutes=1440"):
        EventStore(root, step_minutes=1440)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop("goldstein"), "missing \\['goldstein'\\]"),
        (lambda f: f.with_columns(extra=pl.lit(1)), "unexpected \\['extra'\\]"),
        (lambda f: f.with_columns(subject=pl.lit(7)), "must hold string keys"),
        (lambda f: f.with_columns(object=pl.lit(None, pl.String)), "'object' has 2 nulls"),
        (lambda f: f.with_columns(split=pl.lit("dev")), "'split' has values \\['dev'\\]"),
        (lambda f: f.with_columns(t=pl.lit(-1, pl.Int64)), "negative"),
    ],
)
def test_contract_violations_are_rejected_before_writing(
    root: Path, change: Callable[[pl.DataFrame], pl.DataFrame], message: str
) -> None:
    store = EventStore(root, step_minutes=15)
    before = tree(root)
    with pytest.raises(ValueError, match=message):
        store.append(change(quads(SOURCE_A)), source="a", source_sha256=sha("a"))
    assert tree(root) == before


# --------------------------------------------------------------------- read side


def test_scan_and_snapshot_round_trip(root: Path) -> None:
    store = EventStore(root, step_minutes=1440)
    train = quads([(None, "A", "r1", "B", 0), (None, "B", "r2", "C", 0)], split="train")
    valid = quads([(None, "C", "r1", "A", 1)], split="valid")
    test = quads([(None, "A", "r1", "B", 2), (None, "A", "r1", "B", 2)], split="test")
    for name, frame in (("train", train), ("valid", valid), ("test", test)):
        store.append(frame, source=name, source_sha256=sha(name))
    assert store.steps() == [0, 1, 2]
    assert (store.num_entities, store.num_relations) == (3, 2)
    everything = store.scan()
    assert everything.schema == STORED_SCHEMA
    assert everything["split"].to_list() == ["train", "train", "valid", "test", "test"]
    assert store.scan(split="valid").select("subject", "relation", "object", "t").rows() == [
        (2, 0, 0, 1)
    ]
    assert store.scan(t_min=1, t_max=1)["split"].to_list() == ["valid"]
    assert store.scan(t_min=2).height == 2
    snap = store.snapshot(0)
    assert snap.dtype == np.int64
    assert snap.tolist() == [[0, 0, 1], [1, 1, 2]]
    assert store.snapshot(2).tolist() == [[0, 0, 1], [0, 0, 1]]  # repeats kept
    assert store.snapshot(9).shape == (0, 3)
    assert EventStore(root, step_minutes=1440).scan().equals(everything)
    with pytest.raises(ValueError, match="split must be one of"):
        store.scan(split="dev")


def test_empty_store_reads_empty(root: Path) -> None:
    store = EventStore(root, step_minutes=15)
    assert store.steps() == [] and store.scan().schema == STORED_SCHEMA and store.scan().height == 0
    assert store.num_entities == 0


def test_a_second_handle_sees_commits_of_the_first(root: Path) -> None:
    reader = EventStore(root, step_minutes=15)
    ingest(EventStore(root, step_minutes=15), "a", SOURCE_A)
    assert reader.steps() == [0] and reader.num_entities == 2


def test_source_url_is_optional_and_parts_without_it_read_as_null(root: Path) -> None:
    store = EventStore(root, step_minutes=1440)
    urls = ["https://a.example/1", None]
    store.append(
        quads(SOURCE_A).with_columns(source_url=pl.Series(urls)), source="a", source_sha256=sha("a")
    )
    ingest(store, "b", SOURCE_B)  # a batch without the column: a TKG benchmark, say
    assert store.scan()["source_url"].to_list() == [*urls, None, None]
    for part in root.glob("quads/*/*.parquet"):  # as parts written before the column existed
        pl.read_parquet(part).drop("source_url").write_parquet(part)
    old = EventStore(root, step_minutes=1440).scan()
    assert old.schema == STORED_SCHEMA and old["source_url"].null_count() == old.height == 4


# --------------------------------------------------------------------- closed steps


def test_rows_at_or_before_a_closed_step_are_refused_and_the_step_never_changes(
    root: Path,
) -> None:
    """Issue 9, item 7: once step 1 is closed (its snapshot emitted), no writer can change any
    step up to it, a step that had no rows included, so every reader sees what the snapshot
    said."""
    store = EventStore(root, step_minutes=15)
    ingest(store, "a", SOURCE_A)
    ingest(store, "c", SOURCE_C)  # steps 0 and 1
    assert store.closed_through is None
    store.close_through(1)
    before = tree(root / "quads")
    late = [(10, "USA", "01", "CHN", 0), (11, "CHN", "01", "USA", 2)]
    with pytest.raises(ClosedStepError, match=r"'late': 1 rows for steps \[0\].*closed through 1"):
        ingest(store, "late", late)
    assert tree(root / "quads") == before and not store.has_source(sha("late"))

    open_rows, refused = store.split_closed(quads(late))
    assert refused["event_id"].to_list() == [10] and open_rows["event_id"].to_list() == [11]
    store.append(open_rows, source="late", source_sha256=sha("late"))
    assert store.steps() == [0, 1, 2]
    assert decoded(store) == sorted(SOURCE_A + SOURCE_C + late[1:])


def test_closing_is_durable_and_never_moves_back(root: Path) -> None:
    store = EventStore(root, step_minutes=15)
    store.close_through(5)
    store.close_through(3)  # a replayed, older close
    reopened = EventStore(root, step_minutes=15)
    assert reopened.closed_through == 5
    with pytest.raises(ClosedStepError, match="closed through 5"):
        ingest(reopened, "a", SOURCE_A)  # steps 0 (and nothing was there before)
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        store.close_through(-1)
