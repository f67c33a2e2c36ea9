"""GDELT reader: the team's real samples parse to the counts their SOURCE.md gives, and every kind
of bad row is quarantined with its reason, line and raw text while the good rows of the same file
are still returned. Bad-row files are generated in tmp_path from a real-looking GDELT 2.0 row."""

from __future__ import annotations

import csv
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from services.ingest import gdelt_schema as gs
from services.ingest.gdelt_reader import (
    QUARANTINE_SCHEMA,
    NotGdeltExportError,
    ReadResult,
    read_export,
    read_source,
)

NOW = datetime(2016, 10, 13, 16, 0, tzinfo=UTC)

# A real-looking GDELT 2.0 row (from the 20161013151500 export), by column name.
V2_ROW: dict[str, str] = dict.fromkeys(gs.V2_COLUMNS, "") | {
    "GLOBALEVENTID": "588604781",
    "SQLDATE": "20151014",
    "MonthYear": "201510",
    "Year": "2015",
    "FractionDate": "2015.7781",
    "Actor1Code": "USAGOV",
    "Actor1Name": "UNITED STATES",
    "Actor1CountryCode": "USA",
    "Actor1Type1Code": "GOV",
    "Actor2Code": "GOV",
    "Actor2Name": "PRESIDENT",
    "Actor2Type1Code": "GOV",
    "IsRootEvent": "0",
    "EventCode": "043",
    "EventBaseCode": "043",
    "EventRootCode": "04",
    "QuadClass": "1",
    "GoldsteinScale": "2.8",
    "NumMentions": "1",
    "NumSources": "1",
    "NumArticles": "1",
    "AvgTone": "-4.71584038694075",
    "Actor1Geo_Type": "0",
    "Actor2Geo_Type": "0",
    "ActionGeo_Type": "4",
    "ActionGeo_FullName": "Red Sea, Djibouti (general), Djibouti",
    "ActionGeo_CountryCode": "DJ",
    "ActionGeo_ADM1Code": "DJ00",
    "ActionGeo_ADM2Code": "25312",
    "ActionGeo_Lat": "19",
    "ActionGeo_Long": "39.5",
    "ActionGeo_FeatureID": "-2037160",
    "DATEADDED": "20161013151500",
    "SOURCEURL": "http://www.washingtonexaminer.com/who-are-the-houthis/article/2604455",
}


def v2_line(event_id: int, **overrides: str) -> str:
    """One tab-separated 2.0 line with a chosen GLOBALEVENTID and some fields replaced."""
    row = V2_ROW | {"GLOBALEVENTID": str(event_id)} | overrides
    return "\t".join(row[c] for c in gs.V2_COLUMNS)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def assert_consistent(result: ReadResult) -> None:
    """Every row read is either kept or quarantined; the frames have their contracted schemas."""
    assert result.rows_read == result.rows_kept + sum(result.quarantined.values())
    assert result.quarantine.height == sum(result.quarantined.values())
    assert result.rows.schema == pl.Schema(gs.CANONICAL_SCHEMA)
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)


def only_reject(result: ReadResult) -> dict[str, object]:
    assert result.quarantine.height == 1, result.quarantine
    return result.quarantine.row(0, named=True)


# --- the schema facts match GDELT's own header files ----------------------------------------------


def test_schema_column_lists_match_gdelt_header_files(shared_data: Path) -> None:
    lookups = shared_data / "gdelt" / "lookups"
    v1 = (lookups / "GDELT_1.0_event_Column_Labels_Header_Row_Sep2016.tsv").read_text().split()
    with (lookups / "GDELT_2.0_Events_Column_Labels_Header_Row_Sep2016.csv").open() as f:
        v2 = [row[0] for row in csv.reader(f)]
    assert v1[0] == "tableId" and tuple(v1[1:]) == gs.V1_COLUMNS
    assert v2[0] == "tableId" and tuple(v2[1:]) == gs.V2_COLUMNS
    assert [c for c in gs.V2_COLUMNS if "ADM2" not in c] == list(gs.V1_COLUMNS)
    assert {"EventCode", "EventRootCode", "Actor1Code"} <= set(gs.CODE_COLUMNS)


# --- real samples --------------------------------------------------------------------------------


def test_v1_events_mix_of_57_and_58_field_rows(shared_data: Path) -> None:
    result = read_export(shared_data / "gdelt" / "v1" / "events.csv")
    assert_consistent(result)
    assert (result.rows_read, result.rows_kept, result.quarantine.height) == (710, 710, 0)
    rows = result.rows
    # 509 daily-update rows carry SOURCEURL and DATEADDED 2016-07-28; 201 backfile rows neither.
    assert rows["SOURCEURL"].is_not_null().sum() == 509
    daily = rows.filter(pl.col("SOURCEURL").is_not_null())
    assert daily["DATEADDED"].unique().to_list() == [datetime(2016, 7, 28, tzinfo=UTC)]
    backfile = rows.filter(pl.col("SOURCEURL").is_null())
    assert set(backfile["DATEADDED"].dt.date().unique()) <= {date(2013, 2, 3), date(2013, 2, 6)}
    assert backfile["SQLDATE"].dt.year().unique().to_list() == [1982]
    assert backfile["SQLDATE"].min() == date(1982, 1, 2)
    assert rows["Actor1Geo_ADM2Code"].is_null().all()
    assert rows["EventCode"].str.contains(r"^0\d\d").any()


@pytest.mark.parametrize(
    ("name", "expected_rows", "dateadded"),
    [
        ("20161013151500.export.CSV", 3566, {datetime(2016, 10, 13, 15, 15, tzinfo=UTC)}),
        ("20191024143000.export.CSV", 2111, {datetime(2019, 10, 24, 14, 30, tzinfo=UTC)}),
        (
            "events.csv",
            100,
            {datetime(2015, 2, 18, 23, 0, tzinfo=UTC), datetime(2020, 3, 18, 10, 45, tzinfo=UTC)},
        ),
    ],
)
def test_v2_exports(
    shared_data: Path, name: str, expected_rows: int, dateadded: set[datetime]
) -> None:
    result = read_export(shared_data / "gdelt" / "v2" / name)
    assert_consistent(result)
    assert (result.rows_kept, result.quarantine.height) == (expected_rows, 0)
    assert set(result.rows["DATEADDED"].unique()) == dateadded
    assert result.rows["GLOBALEVENTID"].is_unique().all()
    assert "04" in result.rows["EventRootCode"].to_list()
    assert result.rows["EventCode"].str.starts_with("0").any()


BIGQUERY_COUNTS = {
    "june2011.csv": 5274,
    "july2011.csv": 6303,
    "aug2011.csv": 5894,
    "sept2011.csv": 5856,
    "oct2011.csv": 4050,
    "nov2011.csv": 5316,
    "dec2011.csv": 3029,
    "jan2012.csv": 4324,
    "feb2012.csv": 8484,
    "mar2012.csv": 8441,
    "apr2012.csv": 5865,
    "may2012.csv": 6601,
}


def test_bigquery_csv_folder_all_rows(shared_data: Path) -> None:
    folder = shared_data / "gdelt" / "v1" / "undp_georgia_bigquery_csv"
    result = read_source(folder, now=NOW)  # SOURCE.md in the folder is skipped
    assert_consistent(result)
    assert sum(BIGQUERY_COUNTS.values()) == 69_437
    assert (result.rows_kept, result.quarantine.height) == (69_437, 0)
    rows = result.rows
    # Codes quoted in the CSV keep their leading zeros; unquoted NA became null, not "NA".
    assert rows["EventCode"].str.contains(r"^0\d\d$").any()
    assert rows["Actor1Code"].null_count() > 0
    assert not (rows["Actor1Code"] == "NA").any()
    # mar2012.csv has codes such as " AZE" with a leading space: stripped.
    assert (rows["Actor2Code"] == "AZE").any()
    assert not rows["Actor2Code"].str.contains(r"^\s|\s$").any()
    assert rows["SOURCEURL"].is_null().all()  # "" in every file: no URLs before April 2013
    months = rows["SQLDATE"].dt.strftime("%Y%m").value_counts().sort("SQLDATE")
    assert months["count"].to_list() == [BIGQUERY_COUNTS[n] for n in BIGQUERY_COUNTS]


def test_june2011_extra_month_column_is_dropped(shared_data: Path) -> None:
    # june2011.csv has a 59th header column ``month``; every one of its 5,274 data rows has 59
    # fields, so no row is misaligned once the CSV quoting is honoured (URLs and names contain
    # commas). The non-GDELT column is dropped; the GDELT ones are typed as in the other months.
    path = shared_data / "gdelt" / "v1" / "undp_georgia_bigquery_csv" / "june2011.csv"
    result = read_export(path, now=NOW)
    assert_consistent(result)
    assert (result.rows_kept, result.quarantine.height) == (5274, 0)
    assert "month" not in result.rows.columns
    assert result.rows["SQLDATE"].min() == date(2011, 6, 1)
    assert result.rows["SQLDATE"].max() == date(2011, 6, 30)


# --- one generated file per bad-row kind ----------------------------------------------------------


def test_wrong_field_count_quarantined_good_rows_kept(tmp_path: Path) -> None:
    short = "\t".join(v2_line(2).split("\t")[:60])
    path = write_lines(tmp_path / "x.export.CSV", [v2_line(1), short, v2_line(3), v2_line(4)])
    result = read_export(path, now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 3, 4]
    reject = only_reject(result)
    assert reject["source"] == "x.export.CSV"
    assert (reject["line"], reject["reason"], reject["raw"]) == (2, "wrong_field_count", short)
    assert "60 fields" in str(reject["detail"])


@pytest.mark.parametrize(
    ("override", "field", "value"),
    [
        ({"SQLDATE": "20151340"}, "SQLDATE", "20151340"),
        ({"SQLDATE": "2015101"}, "SQLDATE", "2015101"),
        ({"DATEADDED": "2016101315"}, "DATEADDED", "2016101315"),
        ({"DATEADDED": ""}, "DATEADDED", "empty"),
    ],
)
def test_unparseable_date_quarantined(
    tmp_path: Path, override: dict[str, str], field: str, value: str
) -> None:
    bad = v2_line(2, **override)
    path = write_lines(tmp_path / "d.CSV", [v2_line(1), bad, v2_line(3)])
    result = read_export(path, now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 3]
    reject = only_reject(result)
    assert (reject["line"], reject["reason"], reject["raw"]) == (2, "bad_date", bad)
    assert field in str(reject["detail"]) and value in str(reject["detail"])


@pytest.mark.parametrize(
    ("override", "field", "value"),
    [
        ({"NumMentions": "12x"}, "NumMentions", "12x"),
        ({"GoldsteinScale": "high"}, "GoldsteinScale", "high"),
        ({"QuadClass": "1.5"}, "QuadClass", "1.5"),
        ({"GLOBALEVENTID": "abc"}, "GLOBALEVENTID", "abc"),
        ({"ActionGeo_Lat": "19,5"}, "ActionGeo_Lat", "19,5"),
    ],
)
def test_unparseable_number_quarantined(
    tmp_path: Path, override: dict[str, str], field: str, value: str
) -> None:
    bad = v2_line(2, **override)
    path = write_lines(tmp_path / "n.CSV", [v2_line(1), bad, v2_line(3)])
    result = read_export(path, now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 3]
    reject = only_reject(result)
    assert (reject["line"], reject["reason"], reject["raw"]) == (2, "bad_number", bad)
    assert str(reject["detail"]).startswith(field) and f"'{value}'" in str(reject["detail"])


def test_invalid_utf8_quarantined_rest_of_file_parses(tmp_path: Path) -> None:
    good = [v2_line(i).encode() for i in (1, 3, 5)]
    bad_name = v2_line(2, Actor1Name="M\x00NCHEN").encode().replace(b"\x00", b"\xff")
    bad_last = v2_line(4, SOURCEURL="http://x.org/\x00").encode().replace(b"\x00", b"\xc3")
    path = tmp_path / "u.CSV"  # the last line also lacks its newline
    path.write_bytes(b"\n".join([good[0], bad_name, good[1], good[2], bad_last]))
    result = read_export(path, now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 3, 5]
    q = result.quarantine
    assert q["line"].to_list() == [2, 5]
    assert q["reason"].to_list() == ["invalid_utf8", "invalid_utf8"]
    assert "Actor1Name" in q["detail"][0] and "M\ufffdNCHEN" in q["detail"][0]
    assert "SOURCEURL" in q["detail"][1]
    assert q["raw"][0] == bad_name.decode("utf-8", "replace")


def test_empty_actor_codes_quarantined_one_empty_kept(tmp_path: Path) -> None:
    both = v2_line(2, Actor1Code="", Actor2Code=" ")
    one = v2_line(3, Actor1Code="")
    path = write_lines(tmp_path / "a.CSV", [v2_line(1), both, one])
    result = read_export(path, now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 3]
    assert result.rows["Actor1Code"].to_list() == ["USAGOV", None]
    reject = only_reject(result)
    assert (reject["line"], reject["reason"], reject["raw"]) == (2, "empty_actors", both)


def test_future_dates_quarantined_with_injected_now(tmp_path: Path) -> None:
    # now = 2016-10-13 16:00 UTC, so the cutoff is 2016-10-14 16:00 UTC.
    lines = [
        v2_line(1, SQLDATE="20161014"),  # that day's midnight is before the cutoff: kept
        v2_line(2, SQLDATE="20161015"),
        v2_line(3, DATEADDED="20161014170000"),
        v2_line(4, DATEADDED="20161014153000"),  # kept
    ]
    result = read_export(write_lines(tmp_path / "f.CSV", lines), now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 4]
    q = result.quarantine
    assert q["line"].to_list() == [2, 3]
    assert q["reason"].to_list() == ["future_date", "future_date"]
    assert q["detail"][0].startswith("SQLDATE 20161015") and "DATEADDED" in q["detail"][1]
    # The same file read "later" is fine.
    assert read_export(tmp_path / "f.CSV", now=datetime(2017, 1, 1, tzinfo=UTC)).rows_kept == 4


def test_duplicate_id_later_rows_quarantined(tmp_path: Path) -> None:
    lines = [v2_line(7), v2_line(8), v2_line(7, NumMentions="9"), v2_line(7)]
    result = read_export(write_lines(tmp_path / "dup.CSV", lines), now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [7, 8]
    assert result.rows["NumMentions"].to_list() == [1, 1]  # the first occurrence wins
    q = result.quarantine
    assert q["line"].to_list() == [3, 4]
    assert set(q["reason"]) == {"duplicate_id"}
    assert q["detail"][0] == "GLOBALEVENTID 7 already on line 1"
    assert q["raw"].to_list() == lines[2:]


def test_reason_order_and_counters_on_a_mixed_file(tmp_path: Path) -> None:
    lines = [
        v2_line(1),
        v2_line(2, NumMentions="x", SQLDATE="bad"),  # number is checked before date
        "garbage",
        v2_line(3, Actor1Code="", Actor2Code="", SQLDATE="20991231"),  # actors before future
        v2_line(1),
        "",  # blank lines are skipped, not counted
        v2_line(5),
    ]
    result = read_export(write_lines(tmp_path / "m.CSV", lines), now=NOW)
    assert_consistent(result)
    assert result.rows_read == 6
    assert result.quarantined == {
        "bad_number": 1,
        "wrong_field_count": 1,
        "empty_actors": 1,
        "duplicate_id": 1,
    }
    assert result.quarantine["line"].to_list() == [2, 3, 4, 5]
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 5]


# --- formats --------------------------------------------------------------------------------------


def test_line_by_line_path_types_rows_like_the_whole_file_path(
    shared_data: Path, tmp_path: Path
) -> None:
    # A clean export is typed by one read of the whole file; one damaged line sends the file
    # through the line-by-line path. Both must give the same rows.
    source = shared_data / "gdelt" / "v2" / "20191024143000.export.CSV"
    clean = read_export(source, now=NOW.replace(year=2020))
    damaged = tmp_path / "damaged.export.CSV"
    damaged.write_bytes(source.read_bytes() + b"not\ta\tgdelt\trow\n")
    result = read_export(damaged, now=NOW.replace(year=2020))
    assert result.quarantine.select("line", "reason").rows() == [(2112, "wrong_field_count")]
    assert_frame_equal(result.rows, clean.rows)


def test_raw_values_with_spaces_and_empty_last_field(tmp_path: Path) -> None:
    lines = [v2_line(1, Actor1Code=" USAGOV ", EventCode="043 "), v2_line(2, SOURCEURL="")]
    result = read_export(write_lines(tmp_path / "s.CSV", lines), now=NOW)
    assert_consistent(result)
    assert result.quarantine.height == 0
    assert result.rows["Actor1Code"].to_list() == ["USAGOV", "USAGOV"]
    assert result.rows["EventCode"].to_list() == ["043", "043"]
    assert result.rows["SOURCEURL"].to_list() == [V2_ROW["SOURCEURL"], None]


def test_zip_export(tmp_path: Path) -> None:
    lines = [v2_line(1), v2_line(2, SQLDATE="x"), v2_line(3)]
    archive = tmp_path / "20161013151500.export.CSV.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("20161013151500.export.CSV", "\n".join(lines) + "\n")
    result = read_export(archive, now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 3]
    reject = only_reject(result)
    assert reject["source"] == "20161013151500.export.CSV.zip:20161013151500.export.CSV"
    assert (reject["line"], reject["reason"]) == (2, "bad_date")


def test_crlf_line_endings_and_v1_rows_in_one_file(tmp_path: Path) -> None:
    v1_daily = "\t".join(V2_ROW[c] for c in gs.V1_COLUMNS).replace("20161013151500", "20161013")
    v1_backfile = "\t".join(v1_daily.split("\t")[:57])
    path = tmp_path / "crlf.CSV"
    path.write_bytes(
        "\r\n".join([v2_line(1), v1_daily, v1_backfile.replace("588604781", "3")]).encode()
        + b"\r\n"
    )
    result = read_export(path, now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 588604781, 3]
    assert result.rows["SOURCEURL"].is_null().to_list() == [False, False, True]
    assert result.rows["DATEADDED"][1] == datetime(2016, 10, 13, tzinfo=UTC)
    assert result.rows["ActionGeo_ADM2Code"].to_list() == ["25312", None, None]


def test_bad_number_in_one_layout_leaves_the_other_layouts_typed(tmp_path: Path) -> None:
    v1_daily = "\t".join(V2_ROW[c] for c in gs.V1_COLUMNS).replace("20161013151500", "20161013")
    lines = [v2_line(1, NumMentions="x"), v1_daily, v2_line(3)]
    result = read_export(write_lines(tmp_path / "mixed.CSV", lines), now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [588604781, 3]
    assert result.quarantine.select("line", "reason", "detail").rows() == [
        (1, "bad_number", "NumMentions is not an integer: 'x'")
    ]


def bigquery_text(rows: list[dict[str, str]], *, index: bool = False) -> str:
    """A BigQuery/R-style export: header, quoted strings, unquoted numbers, unquoted NA, month."""
    names = [*gs.V1_COLUMNS, "month"]
    header = ",".join(f'"{n}"' for n in names)
    numeric = {*gs.INT_COLUMNS, *gs.FLOAT_COLUMNS, "SQLDATE", "DATEADDED"}

    def cell(name: str, value: str) -> str:
        if value == "":
            return "NA"
        return value if name in numeric else '"' + value.replace('"', '""') + '"'

    lines = [header]
    for i, row in enumerate(rows, start=1):
        cells = [cell(n, row.get(n, "")) for n in names]
        lines.append(",".join([str(i)] * index + cells))
    return "\n".join(lines) + "\n"


def bq_row(event_id: int, **overrides: str) -> dict[str, str]:
    return (
        V2_ROW
        | {"GLOBALEVENTID": str(event_id), "DATEADDED": "20130203", "month": "06"}
        | overrides
    )


def test_header_csv_na_quotes_month_and_spaces(tmp_path: Path) -> None:
    rows = [
        bq_row(1, Actor1Name='THE "BIG", ONE', Actor2Code=" AZE", ActionGeo_CountryCode="NA"),
        bq_row(2, NumArticles="1e+05", Actor1Code=""),
        bq_row(3, SQLDATE="2011x601"),
    ]
    path = tmp_path / "june.csv"
    path.write_text(bigquery_text(rows), encoding="utf-8")
    result = read_export(path, now=NOW)
    assert_consistent(result)
    out = result.rows
    assert out["GLOBALEVENTID"].to_list() == [1, 2]
    assert out["Actor1Name"][0] == 'THE "BIG", ONE'
    assert out["Actor2Code"][0] == "AZE"
    assert out["ActionGeo_CountryCode"][0] == "NA"  # quoted "NA" is FIPS, not missing
    assert out["Actor1Code"][1] is None  # unquoted NA is missing
    assert out["NumArticles"][1] == 100_000  # R writes large round doubles as 1e+05
    assert out["DATEADDED"][0] == datetime(2013, 2, 3, tzinfo=UTC)
    assert out["SOURCEURL"][0] == V2_ROW["SOURCEURL"]
    reject = only_reject(result)
    assert (reject["line"], reject["reason"]) == (4, "bad_date")  # line 1 is the header
    assert "2011x601" in str(reject["detail"])


def test_header_csv_with_leading_row_index_and_bad_rows(tmp_path: Path) -> None:
    text = bigquery_text([bq_row(i) for i in range(1, 6)], index=True)
    lines = text.splitlines()
    lines[2] = lines[2] + ',"extra"'
    lines[3] = lines[3].replace('"USAGOV"', '"USA GOV')  # unbalanced quote
    path = write_lines(tmp_path / "idx.csv", lines)
    result = read_export(path, now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 4, 5]
    assert set(result.rows["Actor1Code"]) == {"USAGOV"}
    assert result.quarantine["reason"].to_list() == ["wrong_field_count", "bad_quoting"]
    assert result.quarantine["raw"].to_list() == lines[2:4]


# --- not GDELT at all -----------------------------------------------------------------------------


def test_csv_of_something_else_raises(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "cities.csv",
        ["name,country,population", "Tbilisi,GEO,1200000", "Kyiv,UKR,2900000"],
    )
    with pytest.raises(NotGdeltExportError, match=r"cities\.csv.*61 \(GDELT 2\.0\)"):
        read_export(path)


def test_header_that_is_not_gdelt_raises(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "ids.csv", ["GLOBALEVENTID,comment", "1,hello"])
    with pytest.raises(NotGdeltExportError, match=r"ids\.csv.*lacks SQLDATE"):
        read_export(path)


def test_mostly_wrong_field_counts_raise(tmp_path: Path) -> None:
    lines = [v2_line(1), "a\tb\tc", "d\te", "f\tg\th\ti"]
    with pytest.raises(NotGdeltExportError, match=r"junk\.CSV.*3 of 4 rows"):
        read_export(write_lines(tmp_path / "junk.CSV", lines))


def test_naive_now_is_refused(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "ok.CSV", [v2_line(1)])
    with pytest.raises(ValueError, match="timezone-aware"):
        read_export(path, now=datetime(2016, 10, 13))


def test_read_source_directory_in_name_order(tmp_path: Path) -> None:
    write_lines(tmp_path / "b.export.CSV", [v2_line(20), v2_line(21)])
    write_lines(tmp_path / "a.export.CSV", [v2_line(10), v2_line(11, SQLDATE="")])
    (tmp_path / "SOURCE.md").write_text("# not data\n")
    result = read_source(tmp_path, now=NOW)
    assert_consistent(result)
    assert result.rows["GLOBALEVENTID"].to_list() == [10, 20, 21]
    assert result.quarantine.select("source", "line", "reason").rows() == [
        ("a.export.CSV", 2, "bad_date")
    ]
    assert result.rows_read == 4


def test_empty_file_gives_empty_result(tmp_path: Path) -> None:
    (tmp_path / "empty.CSV").write_bytes(b"")
    result = read_export(tmp_path / "empty.CSV", now=NOW)
    assert_consistent(result)
    assert result.rows_read == 0


# --- reading only some columns --------------------------------------------------------------------

SOME_COLUMNS = ("SOURCEURL", "EventRootCode", "GLOBALEVENTID", "Actor1Code", "DATEADDED")
"""A projection as a mapping asks for it (in no particular order)."""


def assert_same_as_full_read(path: Path, columns: tuple[str, ...]) -> ReadResult:
    """Reading ``columns`` keeps exactly those (canonical order) and quarantines exactly what a
    full read does: the reasons do not depend on the columns kept."""
    full = read_export(path, now=NOW)
    part = read_export(path, now=NOW, columns=columns)
    kept = [c for c in gs.CANONICAL_COLUMNS if c in columns]
    assert part.rows.columns == kept
    assert_frame_equal(part.rows, full.rows.select(kept))
    assert_frame_equal(part.quarantine, full.quarantine)
    assert (part.rows_read, part.quarantined) == (full.rows_read, full.quarantined)
    return part


@pytest.mark.parametrize("columns", [SOME_COLUMNS, SOME_COLUMNS[1:], ("GLOBALEVENTID",)])
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, None),
        ({"ActionGeo_Lat": "north"}, "bad_number"),  # a number no mapping reads
        ({"NumSources": "x"}, "bad_number"),
        ({"SQLDATE": "2015-10-14"}, "bad_date"),
        ({"Actor1Code": "", "Actor2Code": ""}, "empty_actors"),
        ({"DATEADDED": "20991013151500"}, "future_date"),
        ({"GLOBALEVENTID": "1"}, "duplicate_id"),
        ({"SOURCEURL": ""}, None),  # an empty last field: the read must not take it for short
        ({"Actor1Name": "A\tB"}, "wrong_field_count"),  # one field too many: numbers shift
        ({"SOURCEURL": "http://a/\tb"}, "wrong_field_count"),  # ... and every field still fits
    ],
)
def test_columns_quarantine_like_a_full_read(
    tmp_path: Path, columns: tuple[str, ...], overrides: dict[str, str], reason: str | None
) -> None:
    lines = [v2_line(1), v2_line(2, **overrides), v2_line(3)]
    part = assert_same_as_full_read(write_lines(tmp_path / "p.CSV", lines), columns)
    assert part.quarantine["reason"].to_list() == ([reason] if reason else [])


def test_columns_catch_a_long_and_a_short_line_whose_tabs_add_up(tmp_path: Path) -> None:
    # 62 + 60 fields hold as many tabs as 2 x 61: a read of some columns must still see both.
    long_line = v2_line(2) + "\textra"
    short_line = v2_line(3).rsplit("\t", 1)[0]
    lines = [v2_line(1), long_line, short_line, v2_line(4)]
    part = assert_same_as_full_read(write_lines(tmp_path / "ls.CSV", lines), SOME_COLUMNS)
    assert part.quarantine.select("line", "reason").rows() == [
        (2, "wrong_field_count"),
        (3, "wrong_field_count"),
    ]
    assert part.rows["GLOBALEVENTID"].to_list() == [1, 4]


def test_columns_on_mixed_layouts_crlf_and_a_header_export(tmp_path: Path) -> None:
    v1_daily = "\t".join(V2_ROW[c] for c in gs.V1_COLUMNS).replace("20161013151500", "20161013")
    v1_backfile = "\t".join(v1_daily.split("\t")[:57])
    mixed = tmp_path / "mixed.CSV"
    mixed.write_bytes(
        "\r\n".join([v2_line(1, NumMentions="x"), v1_daily, v1_backfile, v2_line(4)]).encode()
        + b"\r\n"
    )
    assert_same_as_full_read(mixed, SOME_COLUMNS)
    rows = [bq_row(1, Actor2Code=" AZE"), bq_row(2, NumArticles="1e+05"), bq_row(3, Year="x")]
    header = tmp_path / "june.csv"
    header.write_text(bigquery_text(rows, index=True), encoding="utf-8")
    part = assert_same_as_full_read(header, ("Actor2Code", "NumArticles"))
    assert part.rows.rows() == [("AZE", 1), ("GOV", 100_000)]


def test_columns_of_a_real_export(shared_data: Path) -> None:
    for path in sorted((shared_data / "gdelt" / "v2").glob("*.export.CSV")):
        assert_same_as_full_read(path, SOME_COLUMNS)


def test_columns_must_be_gdelt_names(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "ok.CSV", [v2_line(1)])
    with pytest.raises(ValueError, match="'Actor1code'"):
        read_export(path, columns=["GLOBALEVENTID", "Actor1code"])
    with pytest.raises(TypeError, match="collection of column names"):
        read_export(path, columns="GLOBALEVENTID")
    with pytest.raises(ValueError, match="at least one"):
        read_export(path, columns=())


def test_data_given_by_the_caller_is_what_gets_parsed(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "20161013151500.export.CSV", [v2_line(1), v2_line(2)])
    content = path.read_bytes()
    path.write_text("")  # the file changed since the caller read (and hashed) it
    result = read_export(path, now=NOW, data=content)
    assert result.rows["GLOBALEVENTID"].to_list() == [1, 2]
    archive = tmp_path / "20161013151500.export.CSV.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("20161013151500.export.CSV", content)
    zipped = read_export(tmp_path / "renamed.zip", now=NOW, data=archive.read_bytes())
    assert zipped.rows["GLOBALEVENTID"].to_list() == [1, 2]
    assert zipped.quarantine.height == 0
