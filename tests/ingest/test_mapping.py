"""Rows -> quadruples: entity keys, relation levels, filters and time steps on a hand-made frame
whose expected output is written out, plus one pass over a real GDELT 2.0 export."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from services.ingest.gdelt_reader import read_export
from services.ingest.mapping import (
    FILTER_REASONS,
    NO_ACTOR,
    QUAD_SCHEMA,
    MappingConfig,
    step_start,
    to_quadruples,
)

DAY_2016_10_13 = 17087  # days from 1970-01-01 to 2016-10-13


def frame() -> pl.DataFrame:
    """Five canonical-typed rows: 1-3 complete (2 without a SOURCEURL, as in a GDELT 1.0 backfile
    row), 4 lacks Actor2, 5 repeats event 1."""
    dateadded = [
        datetime(2016, 10, 13, 15, 15, tzinfo=UTC),
        datetime(2016, 10, 13, 15, 29, tzinfo=UTC),
        datetime(2016, 10, 13, 15, 30, tzinfo=UTC),
        datetime(2016, 10, 14, tzinfo=UTC),
        datetime(2016, 10, 13, 15, 15, tzinfo=UTC),
    ]
    return pl.DataFrame(
        {
            "GLOBALEVENTID": [1, 2, 3, 4, 1],
            "SQLDATE": [
                date(2016, 10, 13),
                date(2016, 10, 12),
                date(2016, 10, 13),
                date(2016, 10, 14),
                date(2016, 10, 13),
            ],
            "DATEADDED": dateadded,
            "Actor1Code": ["USAGOV", "RUS", "GEOMIL", "UKR", "USAGOV"],
            "Actor1Name": ["UNITED STATES", "RUSSIA", "GEORGIA", "UKRAINE", "UNITED STATES"],
            "Actor1CountryCode": ["USA", "RUS", "GEO", "UKR", "USA"],
            "Actor2Code": ["RUSGOV", "UKR", "RUS", None, "RUSGOV"],
            "Actor2Name": ["MOSCOW", "UKRAINE", "RUSSIA", None, "MOSCOW"],
            "Actor2CountryCode": ["RUS", "UKR", None, None, "RUS"],
            "EventCode": ["043", "1711", "190", "010", "043"],
            "EventBaseCode": ["043", "171", "190", "010", "043"],
            "EventRootCode": ["04", "17", "19", "01", "04"],
            "GoldsteinScale": [2.8, -9.2, -10.0, 0.0, 2.8],
            "NumMentions": [10, 1, 3, 2, 10],
            "QuadClass": [1, 4, 4, 1, 1],
            "IsRootEvent": [1, 0, 1, 1, 1],
            "SOURCEURL": ["http://a.example/1", None, "http://a.example/3", None, None],
        },
        schema_overrides={"QuadClass": pl.Int8, "IsRootEvent": pl.Int8},
    )


def triples(result_quads: pl.DataFrame) -> list[tuple[str, str, str]]:
    return list(result_quads.select("subject", "relation", "object").iter_rows())


def test_quads_have_exactly_the_contracted_columns() -> None:
    quads = to_quadruples(frame(), MappingConfig()).quads
    assert quads.schema == pl.Schema(QUAD_SCHEMA)
    assert quads.columns == [
        "event_id",
        "subject",
        "relation",
        "object",
        "t",
        "goldstein",
        "num_mentions",
        "quad_class",
        "source_url",
    ]
    assert quads.row(0) == (
        1,
        "USAGOV",
        "043",
        "RUSGOV",
        DAY_2016_10_13,
        2.8,
        10,
        1,
        "http://a.example/1",
    )
    assert quads["source_url"].to_list() == ["http://a.example/1", None, "http://a.example/3"]


@pytest.mark.parametrize(
    ("entity_key", "expected"),
    [
        (
            "actor_code",
            [("USAGOV", "043", "RUSGOV"), ("RUS", "1711", "UKR"), ("GEOMIL", "190", "RUS")],
        ),
        (
            "actor_name",
            [
                ("UNITED STATES", "043", "MOSCOW"),
                ("RUSSIA", "1711", "UKRAINE"),
                ("GEORGIA", "190", "RUSSIA"),
            ],
        ),
        # Row 3 has no Actor2CountryCode: it is dropped under country_code only.
        ("country_code", [("USA", "043", "RUS"), ("RUS", "1711", "UKR")]),
    ],
)
def test_entity_keys(entity_key: str, expected: list[tuple[str, str, str]]) -> None:
    result = to_quadruples(frame(), MappingConfig(entity_key=entity_key))  # type: ignore[arg-type]
    assert triples(result.quads) == expected


@pytest.mark.parametrize(
    ("level", "relations"),
    [
        ("root", ["04", "17", "19"]),
        ("base", ["043", "171", "190"]),
        ("code", ["043", "1711", "190"]),
    ],
)
def test_relation_levels(level: str, relations: list[str]) -> None:
    result = to_quadruples(frame(), MappingConfig(relation_level=level))  # type: ignore[arg-type]
    assert result.quads["relation"].to_list() == relations


def test_filters_are_counted_by_reason() -> None:
    cfg = MappingConfig(root_events_only=True, min_mentions=3)
    result = to_quadruples(frame(), cfg)
    # 5 rows: event 1 repeated (dedupe), event 2 not root, event 4 below 3 mentions.
    assert result.quads["event_id"].to_list() == [1, 3]
    assert result.rows_in == 5
    assert result.dropped == {
        "duplicate_event": 1,
        "not_root_event": 1,
        "low_mentions": 1,
        "missing_actor": 0,
        "missing_relation": 0,
        "missing_time": 0,
    }
    assert tuple(result.dropped) == FILTER_REASONS


def test_missing_actor_and_dedupe_switches() -> None:
    strict = to_quadruples(frame(), MappingConfig())
    assert strict.dropped["missing_actor"] == 1 and strict.dropped["duplicate_event"] == 1
    loose = to_quadruples(frame(), MappingConfig(require_both_actors=False, dedupe=False))
    assert loose.quads["event_id"].to_list() == [1, 2, 3, 4, 1]
    assert loose.quads.filter(pl.col("event_id") == 4)["object"].to_list() == [NO_ACTOR]
    assert sum(loose.dropped.values()) == 0


def test_empty_string_actor_counts_as_missing() -> None:
    rows = frame().with_columns(pl.col("Actor1Code").replace("RUS", " "))
    assert to_quadruples(rows, MappingConfig()).dropped["missing_actor"] == 2


def test_padded_keys_are_stripped_and_null_flags_count_as_failing() -> None:
    rows = frame().with_columns(
        pl.Series("Actor1Code", ["\tUSAGOV ", "RUS", "GEOMIL\u00a0", "UKR", "USAGOV"]),
        pl.Series("IsRootEvent", [1, None, 1, 1, 1], dtype=pl.Int8),
    )
    result = to_quadruples(rows, MappingConfig(root_events_only=True))
    assert result.quads["subject"].to_list() == ["USAGOV", "GEOMIL"]
    assert result.dropped["not_root_event"] == 1  # a missing IsRootEvent is not a root event
    assert sum(result.dropped.values()) == 3


def test_a_row_is_counted_under_the_first_filter_it_fails() -> None:
    # Row 5 repeats event 1 and also lacks Actor2 and mentions: only duplicate_event counts it.
    rows = frame().with_columns(
        pl.Series("Actor2Code", ["RUSGOV", "UKR", "RUS", None, None]),
        pl.Series("NumMentions", [10, 1, 3, 2, 0]),
    )
    result = to_quadruples(rows, MappingConfig(min_mentions=2))
    assert result.quads["event_id"].to_list() == [1, 3]
    assert (result.dropped["duplicate_event"], result.dropped["low_mentions"]) == (1, 1)
    assert result.dropped["missing_actor"] == 1


@pytest.mark.parametrize(
    "cfg",
    [
        MappingConfig(),
        MappingConfig(entity_key="actor_name", relation_level="base", root_events_only=True),
        MappingConfig(entity_key="country_code", time_field="dateadded", step_minutes=60),
    ],
)
def test_needed_columns_are_all_the_mapping_reads(shared_data: Path, cfg: MappingConfig) -> None:
    path = shared_data / "gdelt" / "v2" / "20161013151500.export.CSV"
    rows = read_export(path, columns=cfg.needed_columns).rows
    assert set(rows.columns) == set(cfg.needed_columns)
    full = to_quadruples(read_export(path).rows, cfg)
    part = to_quadruples(rows, cfg)
    assert part.quads.equals(full.quads) and part.dropped == full.dropped


def test_day_steps_from_sqldate_and_integer_sqldate() -> None:
    quads = to_quadruples(frame(), MappingConfig()).quads
    assert quads["t"].to_list() == [DAY_2016_10_13, DAY_2016_10_13 - 1, DAY_2016_10_13]
    as_int = frame().with_columns(pl.col("SQLDATE").dt.strftime("%Y%m%d").cast(pl.Int64))
    assert to_quadruples(as_int, MappingConfig()).quads["t"].to_list() == quads["t"].to_list()
    weekly = to_quadruples(frame(), MappingConfig(step_minutes=7 * 1440)).quads
    # Steps count from Thursday 1970-01-01; Thursday 2016-10-13 starts week 2441 (17087 = 7*2441),
    # so the day before it is still in week 2440.
    assert weekly["t"].to_list() == [2441, 2440, 2441]
    assert step_start(2441, 7 * 1440) == datetime(2016, 10, 13, tzinfo=UTC)


def test_fifteen_minute_steps_from_dateadded() -> None:
    cfg = MappingConfig(time_field="dateadded", step_minutes=15)
    quads = to_quadruples(frame(), cfg).quads
    slot = int(datetime(2016, 10, 13, 15, 15, tzinfo=UTC).timestamp()) // 900
    assert slot == 1_640_413
    # 15:15 and 15:29 share a slot; 15:30 starts the next one.
    assert quads["t"].to_list() == [slot, slot, slot + 1]
    assert step_start(slot, 15) == datetime(2016, 10, 13, 15, 15, tzinfo=UTC)
    assert step_start(slot + 1, 15) == datetime(2016, 10, 13, 15, 30, tzinfo=UTC)


def test_step_start_inverts_t() -> None:
    assert step_start(DAY_2016_10_13, 1440) == datetime(2016, 10, 13, tzinfo=UTC)
    assert step_start(0, 60) == datetime(1970, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="multiple of 15"):
        step_start(1, 10)


def test_sub_day_step_with_sqldate_is_refused() -> None:
    with pytest.raises(ValueError, match=r"step_minutes=15 .*sqldate.*dateadded"):
        MappingConfig(step_minutes=15)
    with pytest.raises(ValueError, match=r"step_minutes=2160"):
        MappingConfig(step_minutes=2160)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"entity_key": "actor"}, "entity_key must be one of"),
        ({"relation_level": "leaf"}, "relation_level must be one of"),
        ({"time_field": "now"}, "time_field must be one of"),
        ({"time_field": "dateadded", "step_minutes": 20}, "multiple of 15"),
        ({"time_field": "dateadded", "step_minutes": 0}, "multiple of 15"),
        ({"min_mentions": -1}, "min_mentions"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MappingConfig(**kwargs)  # type: ignore[arg-type]


def test_config_flags_must_be_bools() -> None:
    with pytest.raises(TypeError, match="dedupe must be a bool"):
        MappingConfig(dedupe="yes")  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        MappingConfig().step_minutes = 15  # type: ignore[misc]


def test_real_v2_export_maps(shared_data: Path) -> None:
    rows = read_export(shared_data / "gdelt" / "v2" / "20161013151500.export.CSV").rows
    result = to_quadruples(
        rows, MappingConfig(time_field="dateadded", step_minutes=15, relation_level="root")
    )
    assert result.rows_in == 3566
    assert result.quads.height + sum(result.dropped.values()) == 3566
    assert result.quads.height > 1000
    assert result.quads["t"].unique().to_list() == [
        int(datetime(2016, 10, 13, 15, 15, tzinfo=UTC).timestamp()) // 900
    ]
    assert set(result.quads["relation"]) <= {f"{i:02d}" for i in range(1, 21)}
    assert result.quads["subject"].null_count() == 0 and result.quads["object"].null_count() == 0
