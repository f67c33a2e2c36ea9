"""Whatever an export file holds, the GDELT reader returns checked rows or raises a documented error.

Property tests of ``services.ingest.gdelt_reader`` in the manner of
tests/shared/test_codec_properties.py. The inputs: arbitrary text lines; real rows with a few
fields dropped, duplicated, swapped, garbled, split by a tab or a newline, given unicode, huge or
non-numbers, quotes, ``NA`` or nothing; files with blank lines, CRLF, a BOM and invalid UTF-8
bytes; and at the file level truncated or damaged ``.zip`` archives and random bytes under an
export's name. For every input:

* the only errors are the documented ones, each naming the file: ``NotGdeltExportError`` for a
  file that is not an export, and for a ``.zip`` that cannot be read ``zipfile.BadZipFile``
  (both in ``export_ingest.UNREADABLE``: ingest quarantines such a file instead of failing);
* ``rows_read == rows_kept + sum(quarantined)``, and ``rows_read`` is the number of non-blank
  data lines;
* every quarantined row has one reason from the documented set, a detail, and the raw text of its
  line, and no line is quarantined twice;
* every kept row has valid typed fields (an id, unique in the file; both dates, not in the future;
  an actor; strings stripped, empty as null), and an untouched real row survives the damage
  around it;
* a read of some ``columns`` quarantines exactly as a full read does.

Seeds: ``gdelt_seed/`` holds real lines copied byte for byte from the team's samples (see its
SOURCE.md), so these tests run without ``../shared/data``; ``test_mutated_team_rows`` draws from
many more lines of those samples and skips without them. Example counts come from the Hypothesis
profile in tests/conftest.py, a third of its count here (100 in CI, about 6,700 under ``make
fuzz``) since every example parses a file; failures are kept in tests/fuzz_corpus, and each
crash found so far is an ``@example`` below.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import polars as pl
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from services.ingest import gdelt_schema as gs
from services.ingest.export_ingest import UNREADABLE
from services.ingest.gdelt_reader import (
    FUTURE_TOLERANCE,
    QUARANTINE_SCHEMA,
    NotGdeltExportError,
    ReadResult,
    read_export,
)

NOW = datetime(2021, 1, 1, tzinfo=UTC)  # after every seed row (the latest is 2020-03-18)
CUTOFF = NOW + FUTURE_TOLERANCE
REASONS = frozenset(
    {
        "invalid_utf8",
        "bad_quoting",
        "wrong_field_count",
        "bad_number",
        "bad_date",
        "empty_actors",
        "future_date",
        "duplicate_id",
    }
)
"""The documented quarantine reasons (the reader's module docstring); a new one must be added here
on purpose."""

SEED_DIR = Path(__file__).parent / "gdelt_seed"


def _seed_lines(name: str) -> list[str]:
    return (SEED_DIR / name).read_text(encoding="utf-8").split("\n")[:-1]


RAW_SEEDS = (*_seed_lines("v1.events.csv"), *_seed_lines("v2.export.CSV"))
"""GDELT 1.0 (58 and 57 fields) and 2.0 (61 fields) rows in the raw tab-separated layout."""
HEADER, *HEADER_SEEDS = _seed_lines("bigquery.mar2012.csv")
"""A BigQuery-via-R export: its header row and three data rows (one with the code ``" AZE"``)."""

# --- building a damaged export --------------------------------------------------------------------

ODD_NUMBERS = (
    "9" * 40,
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "1e309",
    "-1e309",
    "1e+05",
    "1.5e3",
    "1e-400",
    "NaN",
    "nan",
    "inf",
    "-Infinity",
    "0x1F",
    "1_000",
    "+1",
    "-0",
    "00000000000000000001",
    "1.",
    ".5",
    "١٢٣",  # Arabic-Indic digits
    "１２",  # fullwidth digits
    "128",  # past Int8 (QuadClass, IsRootEvent, *Geo_Type)
    "-129",
    "2147483648",  # past Int32 (MonthYear, Year)
)
ODD_DATES = (
    "20991231",
    "20991231235959",
    "20230229",
    "20240229",
    "00000000",
    "99999999",
    "19000101",
    "00010101000000",
    "20161013246000",
    "2016101315150",
    "2016-10-13",
    "２０１６１０１３",
)
ODD_TEXT = (
    "",
    " ",
    "NA",
    '"NA"',
    '""',
    '"',
    "\ufeff",
    "\ufffd",
    "\u00a0",
    "\u2028",
    "\x00",
    "\r",
    "\x0b",
    "😀",
    "Tbilisi, Georgia",
    "GLOBALEVENTID",
    "https://example.org/story?globaleventid=1",
)
ODD_VALUES = st.sampled_from((*ODD_NUMBERS, *ODD_DATES, *ODD_TEXT))
any_text = st.text(max_size=12)
field_text = ODD_VALUES | any_text | st.text(alphabet="0123456789.-+eE", max_size=20)
BAD_BYTES = st.sampled_from(
    [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80"]
)
MUTATIONS = (
    "drop",
    "duplicate",
    "swap",
    "garble",
    "odd",
    "empty",
    "tab",
    "comma",
    "newline",
    "quote",
    "unicode",
    "strip_quotes",
    "no_actors",
    "future",
)
FUTURE = ("20210102", "20210103", "20210102000000", "20210102000001", "20991231")
"""Dates at and just past NOW + 1 day, the future-date cutoff, and far past it."""


def _split_fields(line: str, sep: str) -> list[str]:
    """A line's fields as written, quotes included (commas inside quotes do not split)."""
    if sep == "\t":
        return line.split("\t")
    return re.split(r',(?=(?:[^"]*"[^"]*")*[^"]*$)', line)


def _mutate(draw: st.DrawFn, line: str, sep: str) -> str:
    """One to four damages to a line's fields; key fields (id, dates, actors, the last) are hit
    more often than their share."""
    fields = _split_fields(line, sep)
    for _ in range(draw(st.integers(1, 4))):
        n = len(fields)
        if n == 0:
            fields = [draw(field_text)]
            continue
        key_fields = [i for i in (0, 1, 5, 15, n - 2, n - 1) if i < n]
        i = draw(st.sampled_from(key_fields) | st.integers(0, n - 1))
        kind = draw(st.sampled_from(MUTATIONS))
        event(f"mutation: {kind}")
        value = fields[i]
        if kind == "drop":
            del fields[i]
        elif kind == "duplicate":
            fields.insert(i, value)
        elif kind == "swap":
            j = draw(st.integers(0, n - 1))
            fields[i], fields[j] = fields[j], fields[i]
        elif kind == "garble":
            fields[i] = draw(field_text)
        elif kind == "odd":
            fields[i] = draw(ODD_VALUES)
        elif kind == "empty":
            fields[i] = ""
        elif kind in ("tab", "comma", "newline"):
            cut = draw(st.integers(0, len(value)))
            mark = {"tab": "\t", "comma": ","}.get(kind) or draw(st.sampled_from(["\n", "\r\n"]))
            fields[i] = value[:cut] + mark + value[cut:]
        elif kind == "quote":
            fields[i] = draw(
                st.sampled_from([f'"{value}"', f'"{value}', f'{value}"', f'"{value}""'])
            )
        elif kind == "unicode":
            cut = draw(st.integers(0, len(value)))
            fields[i] = value[:cut] + draw(st.text(min_size=1, max_size=4)) + value[cut:]
        elif kind == "strip_quotes":
            fields[i] = value.replace('"', "")
        elif kind == "no_actors":  # Actor1Code and Actor2Code
            for j in (5, 15):
                if j < n:
                    fields[j] = draw(st.sampled_from(["", "NA", '""', " "]))
        else:  # future: SQLDATE or (in 58 and 61 fields) DATEADDED
            fields[draw(st.sampled_from([1, n - 2]))] = draw(st.sampled_from(FUTURE))
    return sep.join(fields)


@dataclass
class Export:
    """A generated export: its bytes, whether it has a header row, and the GLOBALEVENTIDs of the
    real rows left untouched in it (once per line)."""

    data: bytes
    header: bool
    intact: list[str] = field(default_factory=list)


@st.composite
def exports(
    draw: st.DrawFn, pool: tuple[str, ...] = RAW_SEEDS, header: str | None = None
) -> Export:
    """Real lines from ``pool``, each left alone or damaged, with blank lines, CRLF, a BOM and
    invalid UTF-8 bytes now and then; a header row first when ``header`` is given."""
    sep = "\t" if header is None else ","
    odds = draw(st.sampled_from([0, 2, 4, 8]))  # one line in ``odds`` damaged (0: none)
    lines: list[tuple[str, bool]] = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 9)) == 0:
            lines.append((draw(st.sampled_from(["", "\r", " "])), False))
            continue
        line = draw(st.sampled_from(pool))
        damaged = odds > 0 and draw(st.integers(1, odds)) == 1
        lines.append((_mutate(draw, line, sep) if damaged else line, not damaged))
    if header is not None:
        header_damaged = draw(st.integers(0, 19)) == 0
        text = _mutate(draw, header, sep) if header_damaged else header
        lines = [(text, False)] + [(t, ok and not header_damaged) for t, ok in lines]
    encoded = []
    for text, ok in lines:
        raw = text.encode()
        if ok and draw(st.integers(0, 14)) == 0:  # an invalid UTF-8 byte somewhere in the line
            cut = draw(st.integers(0, len(raw)))
            raw, ok = raw[:cut] + draw(BAD_BYTES) + raw[cut:], False
        encoded.append((raw, ok))
    ending = draw(st.sampled_from([b"\n", b"\n", b"\r\n"]))
    data = ending.join(raw for raw, _ in encoded)
    if encoded and draw(st.booleans()):
        data += ending
    if draw(st.integers(0, 9)) == 0:
        data = b"\xef\xbb\xbf" + data
    intact = [
        _split_fields(text, sep)[0] for (text, _), (_, ok) in zip(lines, encoded, strict=True) if ok
    ]
    return Export(data, header is not None, intact)


def _arbitrary_lines() -> st.SearchStrategy[bytes]:
    """Lines of anything, or of arbitrary fields in about GDELT's count, tab- or comma-joined."""
    fields = st.lists(field_text, min_size=55, max_size=62)
    line = (
        st.text(max_size=80)
        | st.builds("\t".join, fields)
        | st.builds(",".join, fields)
        | st.builds(lambda a, b: a + "\t" + b, st.sampled_from(RAW_SEEDS), st.text(max_size=8))
    )
    return st.lists(line, max_size=6).map(lambda ls: "\n".join(ls).encode())


column_choices = st.none() | st.sets(st.sampled_from(gs.CANONICAL_COLUMNS), min_size=1, max_size=8)

# --- what every read must satisfy -----------------------------------------------------------------


def _data_lines(data: bytes) -> dict[int, str]:
    """Line number -> text of every non-blank line, as the reader numbers and decodes them:
    split at LF, ``\\r`` before it dropped, invalid UTF-8 shown as U+FFFD, a leading BOM dropped."""
    texts = [raw.decode("utf-8", "replace").removesuffix("\r") for raw in data.split(b"\n")]
    texts[0] = texts[0].removeprefix("\ufeff")
    return {n: text for n, text in enumerate(texts, start=1) if text}


def _is_header(line: str) -> bool:
    """The reader's rule: a first line one of whose fields is GLOBALEVENTID is a header row."""
    fields = re.split(r"[\t,]", line)
    return any(f.strip().strip('"').strip().upper() == "GLOBALEVENTID" for f in fields)


def _read(name: str, data: bytes, columns=None) -> ReadResult | Exception:
    """The result, or the refusal: a documented error type naming the file, never anything else."""
    archive = name.lower().endswith(".zip")
    allowed = (NotGdeltExportError, zipfile.BadZipFile) if archive else (NotGdeltExportError,)
    try:
        result = read_export(Path(name), now=NOW, columns=columns, data=data)
    except pl.exceptions.PanicException as err:  # a BaseException: Hypothesis would not shrink it
        raise AssertionError(f"polars panicked: {err}") from err
    except allowed as err:
        event(f"refused: {type(err).__name__}")
        assert isinstance(err, UNREADABLE) and name in str(err), err
        return err
    event("read")
    return result


def _assert_counters(result: ReadResult) -> None:
    assert result.rows_read == result.rows_kept + sum(result.quarantined.values())
    q = result.quarantine
    assert q.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert set(result.quarantined) <= REASONS, result.quarantined
    assert all(count > 0 for count in result.quarantined.values())
    assert dict(Counter(q["reason"].to_list())) == dict(result.quarantined)
    assert q["detail"].null_count() == 0 and q["raw"].null_count() == 0
    for reason in result.quarantined:
        event(f"quarantined: {reason}")


def _assert_kept_rows_valid(rows: pl.DataFrame, *, one_file: bool = True) -> None:
    """The typed contract of ``ReadResult.rows`` (a full read: every canonical column); ids are
    unique within one file (across files, as across a zip's members, the mapping dedupes)."""
    assert rows.schema == pl.Schema(gs.CANONICAL_SCHEMA)
    assert not one_file or rows["GLOBALEVENTID"].is_unique().all()
    assert rows.select(pl.col(gs.REQUIRED_COLUMNS).null_count()).row(0) == (0, 0, 0)
    assert not (rows["Actor1Code"].is_null() & rows["Actor2Code"].is_null()).any()
    assert (rows[gs.DATE_COLUMN] <= CUTOFF.date()).all()
    assert (rows[gs.DATEADDED_COLUMN] <= CUTOFF).all()
    strings = rows.select(gs.STRING_COLUMNS).unpivot()["value"].drop_nulls()
    assert not (strings.str.len_bytes() == 0).any()
    assert not (strings.str.starts_with(" ") | strings.str.ends_with(" ")).any()


def _check_export(name: str, export: Export, columns=None) -> None:
    """Every property of one read of a plain (not zipped) export, and of a read of ``columns``."""
    lines = _data_lines(export.data)
    header = _is_header(next(iter(lines.values()), ""))
    result = _read(name, export.data)
    if isinstance(result, Exception):
        # refused as "not an export": only when at most half the rows are real rows left intact,
        # or when the first row of a raw export reads as a header
        assert 2 * len(export.intact) <= len(lines) - export.header or header > export.header
        return
    _assert_counters(result)
    _assert_kept_rows_valid(result.rows)
    q = result.quarantine
    assert result.rows_read == len(lines) - header
    assert q["line"].is_unique().all() and (q["source"] == name).all()
    assert all(lines.get(n) == raw for n, raw in q.select("line", "raw").iter_rows())
    kept = set(result.rows["GLOBALEVENTID"].to_list())
    for event_id in set(export.intact):
        # a real row untouched survives, unless another line could carry its id as well
        others = sum(event_id in text for text in lines.values())
        if others == 1:
            assert int(event_id) in kept, (event_id, result.quarantine.to_dicts())
    if columns is not None:
        some = read_export(Path(name), now=NOW, columns=columns, data=export.data)
        assert some.rows.columns == [c for c in gs.CANONICAL_COLUMNS if c in columns]
        assert some.rows.equals(result.rows.select(some.rows.columns))
        assert some.quarantine.equals(q) and some.quarantined == result.quarantined
        assert some.rows_read == result.rows_read


# --- properties -----------------------------------------------------------------------------------


def test_seed_rows_read_clean() -> None:
    """The seed itself: every line kept, in both formats (what the mutations start from)."""
    for name in ("v1.events.csv", "v2.export.CSV", "bigquery.mar2012.csv"):
        result = read_export(SEED_DIR / name, now=NOW)
        assert (result.rows_kept, result.quarantined) == (result.rows_read, {})
    assert {len(line.split("\t")) for line in RAW_SEEDS} == {57, 58, 61}


# Each example reads a file once or twice (about 30 ms on a busy CI core, where a decoder example
# takes 1 ms): a third of the profile's count keeps this file near 15 s in CI.
READS = settings(max_examples=max(10, settings.default.max_examples // 3))

V1, V2 = RAW_SEEDS[0], RAW_SEEDS[5]  # a 58-field GDELT 1.0 row and a 61-field 2.0 row


def _edit(line: str, index: int, value: str, sep: str = "\t") -> str:
    fields = _split_fields(line, sep)
    fields[index] = value
    return sep.join(fields)


def _id(line: str) -> str:
    return line.split("\t")[0]


# Regression cases, each a crash the properties found (the commit that fixed the reader says how).
CR_IN_HEADER = b"1\t\r\tGLOBALEVENTID"  # csv.Error from the header check
MIXED_LAYOUTS_REPEATED_ID = Export(  # a polars panic formatting the duplicate_id detail
    "\n".join([_edit(V2, 0, "9" * 40), V1, V2, V2, V2, V2]).encode(),
    header=False,
    intact=[_id(V1)] + [_id(V2)] * 4,
)
URL_MENTIONS_GLOBALEVENTID = Export(  # the whole file refused: "the header row is not GDELT's"
    "\n".join(
        [_edit(V2, 60, "https://example.org/story?globaleventid=1"), *RAW_SEEDS[6:8]]
    ).encode(),
    header=False,
    intact=[_id(V2), *map(_id, RAW_SEEDS[6:8])],
)
BOM_FUTURE_ROW = Export(b"\xef\xbb\xbf" + _edit(V2, 1, "20991231").encode(), header=False)
"""The one-pass read kept the BOM in a quarantined row's raw text; the line-by-line one did not."""
HEADER_NAMES_A_COLUMN_TWICE = Export(  # polars ColumnNotFoundError
    "\n".join(
        ['"GLOBALEVENTID",' + HEADER, HEADER_SEEDS[0].split(",")[0] + "," + HEADER_SEEDS[0]]
    ).encode(),
    header=True,
)
TEXT_AFTER_CLOSING_QUOTE = Export(  # polars ComputeError for the whole file
    "\n".join(
        [HEADER, HEADER_SEEDS[0].replace('"ARM",', '"ARM"0,', 1), *HEADER_SEEDS[1:]]
    ).encode(),
    header=True,
    intact=[_split_fields(line, ",")[0] for line in HEADER_SEEDS[1:]],
)


@READS
@given(data=_arbitrary_lines(), columns=column_choices)
@example(data=CR_IN_HEADER, columns=None)
def test_arbitrary_lines_are_read_checked_or_refused(data, columns):
    _check_export("x.export.CSV", Export(data, header=False), columns)


@READS
@given(export=exports(), columns=column_choices)
@example(export=MIXED_LAYOUTS_REPEATED_ID, columns=None)
@example(export=URL_MENTIONS_GLOBALEVENTID, columns=None)
@example(export=BOM_FUTURE_ROW, columns=None)
def test_mutated_raw_rows_are_read_checked_or_refused(export, columns):
    _check_export("20161013151500.export.CSV", export, columns)


@READS
@given(export=exports(tuple(HEADER_SEEDS), header=HEADER), columns=column_choices)
@example(export=HEADER_NAMES_A_COLUMN_TWICE, columns=None)
@example(export=TEXT_AFTER_CLOSING_QUOTE, columns=None)
def test_mutated_header_csv_rows_are_read_checked_or_refused(export, columns):
    _check_export("mar2012.csv", export, columns)


@READS
@given(data=st.binary(max_size=200), name=st.sampled_from(["r.export.CSV", "r.csv", "r.CSV.zip"]))
def test_random_bytes_under_an_export_name_are_read_checked_or_refused(data, name):
    if name.endswith(".zip"):
        result = _read(name, data)
        if isinstance(result, ReadResult):
            _assert_counters(result)
    else:
        _check_export(name, Export(data, header=False))


def _zip(members: list[Export], compression: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for i, member in enumerate(members):
            archive.writestr(f"m{i}.export.CSV", member.data)
    return buffer.getvalue()


def _damage(archive: bytes, flips, splice, cut) -> bytes:
    """XOR bytes (a position counts from the end when negative), insert bytes, cut the tail."""
    data = bytearray(archive)
    for at, mask in flips:
        data[at % len(data)] ^= mask
    if splice is not None:
        at, extra = splice
        data[at % (len(data) + 1) : at % (len(data) + 1)] = extra
    return bytes(data[: None if cut is None else cut % len(data)])


SEED_V2 = Export((SEED_DIR / "v2.export.CSV").read_bytes(), header=False)
# For one member named m0.export.CSV, the central directory entry starts 73 bytes before the end
# (46 + 13 for its name, then the 22-byte end record): flag byte at -73, method at -71.
ZIP_REGRESSIONS = {
    "encrypted flag: RuntimeError": [(-73, 0x01)],
    "compression method 264: NotImplementedError": [(-70, 0x01)],
    "directory offset past the end: ValueError (negative seek)": [(-3, 0x01)],
}


@READS
@given(
    members=st.lists(exports(), min_size=1, max_size=2),
    compression=st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED]),
    flips=st.lists(st.tuples(st.integers(-(2**16), 2**16), st.integers(1, 255)), max_size=4),
    splice=st.none() | st.tuples(st.integers(0, 2**16), st.binary(min_size=1, max_size=16)),
    cut=st.none() | st.integers(0, 2**16),
)
@example(members=[SEED_V2], compression=zipfile.ZIP_DEFLATED, flips=[], splice=None, cut=None)
@example(members=[SEED_V2], compression=zipfile.ZIP_DEFLATED, flips=[], splice=None, cut=100)
def test_damaged_zip_archives_are_read_checked_or_refused(members, compression, flips, splice, cut):
    damaged = flips or splice is not None or cut is not None
    event("damaged" if damaged else "intact")
    archive = _damage(_zip(members, compression), flips, splice, cut)
    result = _read("20161013151500.export.CSV.zip", archive)
    if isinstance(result, Exception):  # an intact archive opens, whatever its members hold
        assert damaged or isinstance(result, NotGdeltExportError), result
        return
    _assert_counters(result)
    _assert_kept_rows_valid(result.rows, one_file=False)
    if not damaged:  # an intact archive reads as its members do, one by one
        assert result.rows_read == sum(len(_data_lines(m.data)) for m in members)


@pytest.mark.parametrize("flips", ZIP_REGRESSIONS.values(), ids=ZIP_REGRESSIONS.keys())
def test_damaged_zip_regressions_are_bad_zip_files(flips: list[tuple[int, int]]) -> None:
    """Damage ``zipfile`` reports as neither ``BadZipFile`` nor ``zlib.error``, so ingest did not
    quarantine the file but crashed on it, on every tick: now one ``BadZipFile`` naming the file."""
    archive = _damage(_zip([SEED_V2], zipfile.ZIP_DEFLATED), flips, None, None)
    with pytest.raises(zipfile.BadZipFile, match=r"^t\.zip: the zip archive cannot be read"):
        read_export(Path("t.zip"), now=NOW, data=archive)


# --- the team's samples: the seed is real, and many more real rows -------------------------------


@cache
def _team_pool(data_dir: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Every 25th line of each raw sample and every 250th of each BigQuery file (a few hundred
    rows from eight exports), as (raw lines, header-CSV lines)."""
    gdelt = data_dir / "gdelt"
    raw = [*(gdelt / "v2").glob("*.CSV"), gdelt / "v2" / "events.csv", gdelt / "v1" / "events.csv"]
    raw_lines = [ln for p in sorted(raw) for ln in p.read_text().split("\n")[:-1][::25]]
    bq = sorted((gdelt / "v1" / "undp_georgia_bigquery_csv").glob("*.csv"))
    header_lines = [
        ln
        for p in bq
        if p.name != "june2011.csv"  # its extra ``month`` column needs its own header
        for ln in p.read_text().split("\n")[1:-1][::250]
    ]
    return tuple(raw_lines), tuple(header_lines)


def test_seed_lines_are_copied_from_the_team_samples(shared_data: Path) -> None:
    gdelt = shared_data / "gdelt"
    sources = {
        "v1.events.csv": [gdelt / "v1" / "events.csv"],
        "v2.export.CSV": sorted((gdelt / "v2").glob("*")),
        "bigquery.mar2012.csv": [gdelt / "v1" / "undp_georgia_bigquery_csv" / "mar2012.csv"],
    }
    for name, paths in sources.items():
        real = {ln for p in paths if p.suffix != ".md" for ln in p.read_text().split("\n")}
        assert set(_seed_lines(name)) <= real, name


@given(data=st.data(), columns=column_choices)
def test_mutated_team_rows_are_read_checked_or_refused(shared_data, data, columns):
    raw, header_rows = _team_pool(shared_data)
    if data.draw(st.booleans()):
        _check_export("team.export.CSV", data.draw(exports(raw)), columns)
    else:
        _check_export("team.csv", data.draw(exports(header_rows, header=HEADER)), columns)
