"""Supporting facts read from a real EventStore: order, strictly-before, window, direction,
partitions read, and source_url from a real GDELT file and from a store older than the column."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest

from services.ingest.export_ingest import ingest_file
from services.ingest.gdelt_reader import read_export
from services.ingest.mapping import MappingConfig
from shared.event_store import EventStore
from shared.facts import Fact, recent_facts, supporting_facts

Row = tuple[int | None, str, str, str, int, str | None]  # event_id, s, r, o, t, source_url


def quads(rows: list[Row]) -> pl.DataFrame:
    """A batch in the store's reader contract, with the optional source_url column."""
    event_id, subject, relation, obj, t, url = (list(column) for column in zip(*rows, strict=True))
    return pl.DataFrame(
        {
            "event_id": pl.Series(event_id, dtype=pl.Int64),
            "subject": subject,
            "relation": relation,
            "object": obj,
            "t": pl.Series(t, dtype=pl.Int64),
            "goldstein": pl.Series([0.0] * len(rows), dtype=pl.Float64),
            "num_mentions": pl.Series([1] * len(rows), dtype=pl.Int64),
            "quad_class": pl.Series([1] * len(rows), dtype=pl.Int8),
            "source_url": pl.Series(url, dtype=pl.String),
        }
    )


def ingest(store: EventStore, name: str, rows: list[Row]) -> None:
    sha = hashlib.sha256(name.encode()).hexdigest()
    store.append(quads(rows), source=name, source_sha256=sha)


def url(event_id: int) -> str:
    return f"https://news.example.com/{event_id}.html"


def seen(facts: list[Fact]) -> list[tuple[int | None, int]]:
    """(event_id, t) of each fact, in the order returned."""
    return [(fact.event_id, fact.t) for fact in facts]


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    """A at every step 0..5; step 4 holds three A facts over two ingests; B and C around A."""
    store = EventStore(tmp_path / "store", step_minutes=1440, min_free_bytes=0)
    first: list[Row] = [
        (10, "A", "r1", "B", 0, url(10)),
        (11, "B", "r2", "A", 1, url(11)),
        (12, "A", "r1", "C", 2, url(12)),
        (13, "C", "r1", "B", 2, url(13)),
        (14, "A", "r3", "B", 3, None),
        (15, "A", "r1", "C", 4, url(15)),
        (16, "A", "r2", "B", 4, url(16)),
        (18, "A", "r1", "B", 5, url(18)),
    ]
    ingest(store, "first", first)
    ingest(store, "second", [(17, "A", "r3", "C", 4, url(17)), (19, "B", "r1", "A", 6, url(19))])
    return store


def ids(store: EventStore, *keys: str) -> list[int]:
    return store.entities.ids(list(keys)).tolist()


def test_recent_facts_are_newest_first_with_ties_in_storage_order(store: EventStore) -> None:
    (a,) = ids(store, "A")
    facts = recent_facts(store, a, before=6, limit=5)
    # Step 4: the first ingest's two rows in row order, then the second ingest's row.
    assert seen(facts) == [(18, 5), (15, 4), (16, 4), (17, 4), (14, 3)]
    assert facts[0] == Fact(
        t=5,
        subject=a,
        relation=store.relations.ids(["r1"]).item(),
        object=ids(store, "B")[0],
        subject_key="A",
        relation_key="r1",
        object_key="B",
        event_id=18,
        source_url=url(18),
    )
    assert facts[-1].source_url is None
    assert recent_facts(store, a, before=6, limit=5) == facts  # the same list every time


def test_recent_facts_are_strictly_before_and_only_of_that_subject(store: EventStore) -> None:
    a, b = ids(store, "A", "B")
    assert seen(recent_facts(store, a, before=4, limit=10)) == [(14, 3), (12, 2), (10, 0)]
    assert seen(recent_facts(store, a, before=0, limit=10)) == []
    assert seen(recent_facts(store, b, before=7, limit=10)) == [(19, 6), (11, 1)]
    assert recent_facts(store, a, before=6, limit=0) == []


def test_window_keeps_only_the_last_steps_before(store: EventStore) -> None:
    (a,) = ids(store, "A")
    assert seen(recent_facts(store, a, before=5, limit=10, window=2)) == [
        (15, 4),
        (16, 4),
        (17, 4),
        (14, 3),
    ]
    assert seen(recent_facts(store, a, before=3, limit=10, window=1)) == [(12, 2)]
    assert recent_facts(store, a, before=2, limit=10, window=1) == []  # A has nothing at step 1
    with pytest.raises(ValueError, match="window"):
        recent_facts(store, a, before=5, limit=10, window=0)
    with pytest.raises(ValueError, match="limit"):
        recent_facts(store, a, before=5, limit=-1)


def test_supporting_facts_link_the_pair_in_either_direction(store: EventStore) -> None:
    a, b, c = ids(store, "A", "B", "C")
    ab = supporting_facts(store, a, b, before=7, limit=10)
    assert seen(ab) == [(19, 6), (18, 5), (16, 4), (14, 3), (11, 1), (10, 0)]
    assert {(f.subject_key, f.object_key) for f in ab} == {("A", "B"), ("B", "A")}
    assert {f.relation_key for f in ab} == {"r1", "r2", "r3"}  # any relation
    assert supporting_facts(store, b, a, before=7, limit=10) == ab  # symmetric in the pair
    assert seen(supporting_facts(store, b, c, before=7, limit=10)) == [(13, 2)]
    assert seen(supporting_facts(store, a, c, before=5, limit=2, window=3)) == [(15, 4), (17, 4)]


def test_only_the_newest_partitions_are_read_when_they_suffice(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    (a,) = ids(store, "A")
    ranges: list[tuple[int | None, int | None]] = []
    real = store.scan_lazy

    def spy(split=None, t_min=None, t_max=None):
        ranges.append((t_min, t_max))
        return real(split, t_min, t_max)

    monkeypatch.setattr(store, "scan_lazy", spy)
    assert seen(recent_facts(store, a, before=6, limit=2)) == [(18, 5), (15, 4)]
    assert ranges and min(t_min for t_min, _ in ranges) >= 3  # steps 0-2 never read
    assert all(t_max is not None and t_max <= 5 for _, t_max in ranges)
    ranges.clear()
    recent_facts(store, a, before=6, limit=100, window=2)  # not enough: reads the whole window
    assert min(t_min for t_min, _ in ranges) == 4 and max(t_max for _, t_max in ranges) == 5


def test_source_url_comes_through_from_a_real_gdelt_1_export(
    shared_data: Path, tmp_path: Path
) -> None:
    """GDELT 1.0 sample: daily-update rows carry a SOURCEURL, backfile rows have none."""
    path = shared_data / "gdelt" / "v1" / "events.csv"
    store = EventStore(tmp_path / "store", step_minutes=1440, min_free_bytes=0)
    ingest_file(path, store, MappingConfig(), tmp_path / "quarantine")
    raw = read_export(path).rows.unique("GLOBALEVENTID", keep="first", maintain_order=True)
    raw_url = dict(zip(raw["GLOBALEVENTID"].to_list(), raw["SOURCEURL"].to_list(), strict=True))
    stored = store.scan()
    with_url = stored.filter(pl.col("source_url").is_not_null())
    assert with_url.height > 0 and with_url.height < stored.height  # both kinds are stored
    facts = []
    for subject, t in stored.group_by("subject").agg(pl.col("t").max()).iter_rows():
        facts += recent_facts(store, subject, before=t + 1, limit=1000)
    assert len(facts) == stored.height  # every stored fact, once
    assert all(fact.source_url == raw_url[fact.event_id] for fact in facts)
    assert sum(fact.source_url is not None for fact in facts) == with_url.height


def test_a_store_written_before_source_url_reads_it_as_null(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "store", step_minutes=1440, min_free_bytes=0)
    ingest(store, "old", [(1, "A", "r1", "B", 0, url(1)), (2, "A", "r1", "B", 1, url(2))])
    parts = sorted((tmp_path / "store" / "quads").rglob("*.parquet"))
    for part in parts:  # as the code before source_url wrote them: no such column
        pl.read_parquet(part).drop("source_url").write_parquet(part)
    assert all("source_url" not in pl.read_parquet_schema(part) for part in parts)
    reopened = EventStore(tmp_path / "store", step_minutes=1440)
    ingest(reopened, "new", [(3, "B", "r1", "A", 2, url(3))])
    a, b = ids(reopened, "A", "B")
    old = recent_facts(reopened, a, before=2, limit=10)
    assert seen(old) == [(2, 1), (1, 0)] and all(fact.source_url is None for fact in old)
    mixed = supporting_facts(reopened, a, b, before=3, limit=10)
    assert [fact.source_url for fact in mixed] == [url(3), None, None]
    assert reopened.scan()["source_url"].to_list() == [None, None, url(3)]
