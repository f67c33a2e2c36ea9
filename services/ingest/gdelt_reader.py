"""Read GDELT event exports into typed canonical rows; bad rows go to a quarantine, not /dev/null.

Why this shape: GDELT files are large (a 1.0 daily file has ~200k rows, the backfile millions) and
dirty in small ways (a bad byte, a truncated row, a duplicated id). One bad row must not cost the
file, and a silently dropped row must not go unnoticed, so every row either comes out typed in
``ReadResult.rows`` or lands in ``ReadResult.quarantine`` with its line number, a reason code and
the raw text, and the counters always add up: ``rows_read == rows_kept + sum(quarantined)``.

Formats (see ``gdelt_schema`` for the layouts):

* raw tab-separated exports without a header (1.0: 57 or 58 fields, 2.0: 61 fields), the layout
  decided per row by its field count, so 1.0 backfile and daily rows may share a file;
* the same inside a ``.zip`` (GDELT ships ``*.export.CSV.zip``); every member is read;
* delimited exports with a GDELT header row, e.g. BigQuery results written by R: comma-separated,
  double-quoted, unquoted ``NA`` for empty, extra non-GDELT columns (``month``) dropped, a leading
  row-index column (one more field than header names) tolerated.

Speed: nothing loops over rows in Python. A clean raw export (the usual case) is typed by a single
multi-threaded ``polars.read_csv``; the file is only taken apart line by line when that fails, and
even then each group of lines with one layout is first retried as one typed read, so only a group
holding an unparseable number pays for string splitting and ``strict=False`` casts. Python loops
only over invalid-UTF-8 spots while decoding and over those few lines to name the field at fault.
A caller that needs only some columns (``columns=``) spares the reader building the others: most
of a read's time is materialising strings (names, URLs, geo names), not splitting lines. The
numbers, the dates and the actor codes are parsed whatever the caller keeps, because they decide
the quarantine reasons.

Quarantine reasons, in the order they are checked (a row gets the first that applies):
``invalid_utf8``, ``bad_quoting``, ``wrong_field_count``, ``bad_number``, ``bad_date``,
``empty_actors`` (both actor codes empty: such a row can never make a quadruple), ``future_date``
(SQLDATE or DATEADDED after ``now`` + 1 day) and ``duplicate_id`` (a GLOBALEVENTID already kept
from an earlier line of the same file; duplicates across files are left to the mapping's dedupe).
Blank lines are skipped and not counted as rows.
"""

from __future__ import annotations

import codecs
import csv
import io
import lzma
import re
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import structlog

from services.ingest import gdelt_schema as gs

log = structlog.get_logger(__name__)

REASON_INVALID_UTF8 = "invalid_utf8"
REASON_BAD_QUOTING = "bad_quoting"
REASON_FIELD_COUNT = "wrong_field_count"
REASON_BAD_NUMBER = "bad_number"
REASON_BAD_DATE = "bad_date"
REASON_EMPTY_ACTORS = "empty_actors"
REASON_FUTURE_DATE = "future_date"
REASON_DUPLICATE_ID = "duplicate_id"

FUTURE_TOLERANCE = timedelta(days=1)
"""Rows dated later than ``now`` plus this are impossible (clock skew aside) and quarantined."""

NOT_GDELT_SHARE = 0.5
"""Above this share of rows with an impossible field count, the file is not a GDELT export."""

SOURCE_SUFFIXES = (".csv", ".tsv", ".zip")
"""Suffixes (any case) ``read_source`` picks up in a directory; others (SOURCE.md) are skipped."""

QUARANTINE_SCHEMA: Mapping[str, pl.DataType] = {
    "source": pl.String(),
    "line": pl.Int64(),
    "reason": pl.String(),
    "detail": pl.String(),
    "raw": pl.String(),
}

_TYPED = "__t_"  # prefix of a typed copy of a column while its string original is still needed
_DATES = (gs.DATE_COLUMN, gs.DATEADDED_COLUMN)
_NUMBER_COLUMNS = (*gs.INT_COLUMNS, *gs.FLOAT_COLUMNS)
_REJECT_SCHEMA: Mapping[str, pl.DataType] = {
    "line": pl.Int64(),
    "reason": pl.String(),
    "detail": pl.String(),
}
_PARSED_SCHEMA: Mapping[str, pl.DataType] = {
    "line": pl.Int64(),
    **{c: pl.String() if c in _DATES else dtype for c, dtype in gs.CANONICAL_SCHEMA.items()},
}
"""Split rows before the per-row checks: numbers typed, the two dates still strings."""
_CHECKED_COLUMNS = frozenset({*_NUMBER_COLUMNS, *_DATES, "Actor1Code", "Actor2Code"})
"""Columns parsed by every read, wanted or not: they decide ``bad_number``, ``bad_date`` and
``empty_actors``, so a row is quarantined the same way whichever columns the caller keeps."""
_COUNT_CHUNK = 1 << 20  # bytes per step when counting a byte (stays in cache: ~2x faster)
_CANONICAL_BY_UPPER = {c.upper(): c for c in gs.CANONICAL_COLUMNS}
_RAW_EXPECTED = "57 or 58 (GDELT 1.0) or 61 (GDELT 2.0) tab-separated fields per row"
_HEADER_EXPECTED = "a GDELT header row naming at least the 57 GDELT 1.0 columns (GLOBALEVENTID...)"

Names = tuple[str | None, ...]
"""Field names of one row layout, in order; None marks a field that is not a GDELT column."""


class NotGdeltExportError(ValueError):
    """The file is not a GDELT event export at all (as opposed to one with some bad rows)."""


@dataclass(frozen=True)
class ReadResult:
    """Typed good rows, quarantined bad rows and the counters that tie them together."""

    rows: pl.DataFrame
    quarantine: pl.DataFrame
    rows_read: int
    quarantined: Mapping[str, int] = field(default_factory=dict)
    """Quarantined row count per reason code."""

    @property
    def rows_kept(self) -> int:
        """Rows that came out typed in ``rows``."""
        return self.rows.height

    @classmethod
    def concat(cls, results: Sequence[ReadResult]) -> ReadResult:
        """One result for several files: frames stacked in order, counters summed."""
        if not results:
            return cls(
                rows=pl.DataFrame(schema=dict(gs.CANONICAL_SCHEMA)),
                quarantine=pl.DataFrame(schema=dict(QUARANTINE_SCHEMA)),
                rows_read=0,
            )
        totals: Counter[str] = Counter()
        for result in results:
            totals.update(result.quarantined)
        return cls(
            rows=pl.concat([r.rows for r in results]),
            quarantine=pl.concat([r.quarantine for r in results]),
            rows_read=sum(r.rows_read for r in results),
            quarantined=dict(totals),
        )


def read_export(
    path: str | Path,
    *,
    now: datetime | None = None,
    columns: Collection[str] | None = None,
    data: bytes | None = None,
) -> ReadResult:
    """Read one GDELT export (raw tab-separated, header-delimited, or a .zip of either).

    ``now`` (timezone-aware; default: the current time) sets the future-date cutoff, so tests can
    pin it. ``columns`` (canonical names; default: all) are the columns ``rows`` holds, in
    canonical order; the quarantine and the counters are the same whatever is chosen. ``data`` is
    the file's content when the caller has read it already (to hash it, say), so it is not read
    twice; ``path`` then only names the source. Raises ``NotGdeltExportError`` when the file is
    not a GDELT export at all, and ``zipfile.BadZipFile`` for a ``.zip`` that cannot be read
    (truncated, damaged, encrypted, an unsupported compression); both name the file.
    """
    path = Path(path)
    cutoff = _future_cutoff(now)
    plan = _Plan.of(columns)
    data = path.read_bytes() if data is None else data
    if path.suffix.lower() == ".zip":
        return ReadResult.concat(
            [
                _read_bytes(member, source, cutoff, plan)
                for source, member in _zip_members(path.name, data)
            ]
        )
    return _read_bytes(data, path.name, cutoff, plan)


def source_files(path: str | Path) -> list[Path]:
    """``path`` itself, or a directory's export files in name order.

    In a directory only ``SOURCE_SUFFIXES`` files are taken (so a SOURCE.md beside the data is
    fine); subdirectories are not descended into.
    """
    path = Path(path)
    if not path.is_dir():
        return [path]
    return [
        child
        for child in sorted(path.iterdir(), key=lambda p: p.name)
        if child.is_file() and child.suffix.lower() in SOURCE_SUFFIXES
    ]


def iter_source(path: str | Path, *, now: datetime | None = None) -> Iterator[ReadResult]:
    """Yield one ``ReadResult`` per export under ``path`` (see :func:`source_files`)."""
    for child in source_files(path):
        yield read_export(child, now=now)


def read_source(path: str | Path, *, now: datetime | None = None) -> ReadResult:
    """All exports under ``path`` (a file or a directory) as one concatenated ``ReadResult``."""
    return ReadResult.concat(list(iter_source(path, now=now)))


# --- whole file -----------------------------------------------------------------------------------


def _future_cutoff(now: datetime | None) -> datetime:
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (e.g. tzinfo=UTC), got {now!r}")
    return now.astimezone(UTC) + FUTURE_TOLERANCE


_ARCHIVE_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,  # no archive, a bad CRC, a truncated member
    zlib.error,  # a damaged deflate stream
    EOFError,  # a member's data cut short
    NotImplementedError,  # an unsupported compression method or zip version
    RuntimeError,  # an encrypted member
    ValueError,  # an impossible offset ("negative seek value")
    OSError,  # a damaged bzip2 stream
    lzma.LZMAError,
    struct.error,
)
"""What ``zipfile`` raises on a damaged archive (found by tests/ingest/test_gdelt_reader_properties)."""


@contextmanager
def _archive_errors(name: str) -> Iterator[None]:
    """Any of ``_ARCHIVE_ERRORS`` as ``zipfile.BadZipFile`` naming the file: the one error a
    caller catches (``export_ingest.UNREADABLE``) for an archive, however it is damaged."""
    try:
        yield
    except _ARCHIVE_ERRORS as err:
        raise zipfile.BadZipFile(
            f"{name}: the zip archive cannot be read: {type(err).__name__}: {err}"
        ) from err


def _zip_members(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    with _archive_errors(name):
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = sorted(m for m in archive.namelist() if not m.endswith("/"))
    with archive:
        if not members:
            raise NotGdeltExportError(
                f"{name}: the zip archive holds no file; expected a "
                f"GDELT export inside (*.export.CSV)"
            )
        for member in members:
            with _archive_errors(name):
                content = archive.read(member)
            yield f"{name}:{member}", content


@dataclass(frozen=True)
class _Plan:
    """Which canonical columns a read parses (``parsed``) and which it returns (``output``)."""

    parsed: tuple[str, ...]
    output: tuple[str, ...]

    @classmethod
    def of(cls, columns: Collection[str] | None) -> _Plan:
        """Parse what the caller wants plus ``_CHECKED_COLUMNS``; None means every column."""
        if columns is None:
            return cls(gs.CANONICAL_COLUMNS, gs.CANONICAL_COLUMNS)
        if isinstance(columns, str):
            raise TypeError(f"columns must be a collection of column names, got {columns!r}")
        if not columns:  # a frame without columns has no height, so rows_kept would be 0
            raise ValueError("columns must name at least one GDELT column")
        unknown = sorted(set(columns) - set(gs.CANONICAL_COLUMNS))
        if unknown:
            raise ValueError(
                f"columns {unknown} are not GDELT columns; expected names from "
                f"gdelt_schema.CANONICAL_COLUMNS"
            )
        wanted = set(columns)
        return cls(
            tuple(c for c in gs.CANONICAL_COLUMNS if c in wanted or c in _CHECKED_COLUMNS),
            tuple(c for c in gs.CANONICAL_COLUMNS if c in wanted),
        )

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """``_PARSED_SCHEMA`` cut to the parsed columns (``line`` first)."""
        return {"line": pl.Int64(), **{c: _PARSED_SCHEMA[c] for c in self.parsed}}

    def indices(self, names: Names, also: int | None = None) -> list[int]:
        """Positions of the parsed columns in a row layout, plus position ``also`` if given: the
        ``columns=`` of a polars read that builds only these."""
        keep = set(self.parsed)
        return [i for i, name in enumerate(names) if name in keep or i == also]


@dataclass(frozen=True)
class _Parsed:
    """A file split into fields, before the per-row checks."""

    frame: pl.DataFrame
    """Rows in ``_Plan.schema``."""
    rejects: pl.DataFrame
    """``line, reason, detail`` of lines that could not be split into typed fields."""
    rows_read: int
    lines: Callable[[], pl.DataFrame]
    """The file's lines (``line``, ``text``), for the raw text of quarantined rows."""
    format: str


def _read_bytes(data: bytes, source: str, cutoff: datetime, plan: _Plan) -> ReadResult:
    parsed = _parse_fast(data, plan) or _parse_by_line(data, source, plan)
    checked = _with_reason(parsed.frame, cutoff)
    good, duplicates = _split_duplicates(checked.filter(pl.col("reason").is_null()))
    bad_rows = _row_rejects(checked.filter(pl.col("reason").is_not_null()), cutoff)
    rejects = pl.concat([parsed.rejects, bad_rows, duplicates])
    result = ReadResult(
        rows=good.select(_output(plan)),
        quarantine=_quarantine(rejects, parsed.lines, source),
        rows_read=parsed.rows_read,
        quarantined=dict(Counter(rejects["reason"].to_list())),
    )
    log.info(
        "export_read",
        file=source,
        format=parsed.format,
        rows=result.rows_read,
        kept=result.rows_kept,
        quarantined=result.quarantined,
    )
    return result


def _parse_fast(data: bytes, plan: _Plan) -> _Parsed | None:
    """One typed read of the whole file, for the common case; None when it does not apply.

    Applies to a raw tab-separated export whose rows all have the first row's layout and whose
    numbers all parse. Anything else (a header, mixed layouts, a bad number, invalid UTF-8, a
    blank line) makes polars raise or the tab count disagree, and ``_parse_by_line`` takes over.
    The read is projected onto the parsed columns and the layout's last field (see
    ``_all_rows_complete``); when that cannot prove the field counts, every column is read.
    """
    end = data.find(b"\n")
    first_line = data[: end if end >= 0 else len(data)]
    fields = first_line.count(b"\t") + 1
    names = gs.LAYOUTS.get(fields)
    if names is None or b"GLOBALEVENTID" in first_line.upper():  # maybe a header: look closer
        return None
    keep = plan.indices(names, also=fields - 1)
    frame = _typed_read(data, names, _RAW_DIALECT, keep)
    if frame is None:
        return None
    projected = len(keep) < fields
    if not _all_rows_complete(frame, data, fields, projected=projected):
        if not projected:
            return None
        frame = _typed_read(data, names, _RAW_DIALECT, list(range(fields)))
        if frame is None or not _all_rows_complete(frame, data, fields, projected=False):
            return None
    lines = pl.int_range(1, frame.height + 1, dtype=pl.Int64, eager=True)
    return _Parsed(
        _to_parsed(frame, lines, plan),
        _no_rejects(),
        frame.height,
        lambda: _split_lines(_strip_bom(data.decode())),  # polars skipped the BOM too
        "raw_tsv",
    )


def _all_rows_complete(frame: pl.DataFrame, data: bytes, fields: int, *, projected: bool) -> bool:
    """Whether every line had exactly ``fields`` fields.

    polars pads a short line with nulls; a long one makes it raise when it reads every column,
    but a read of some columns (``projected``) skips the rest of each line unchecked. The last
    field is always read, and a padded row has it null, so a last column without nulls
    (SOURCEURL: the usual case) proves no line short; then a file of exactly (fields - 1) tabs
    per row proves none long either (a projected read must check that; a full one raised).
    A null last field may be an empty value or a short line: a projected read cannot tell
    (False, the caller reads every column); a full one checks (fields - 1) tabs per line, which
    also rules out blank lines (polars returns those as all-null rows).
    """
    if frame[frame.columns[-1]].null_count() == 0:
        return not projected or _count_byte(data, b"\t") == (fields - 1) * frame.height
    if projected:
        return False
    n_lines = _count_byte(data, b"\n") + (not data.endswith(b"\n"))
    return frame.height == n_lines and _count_byte(data, b"\t") == (fields - 1) * n_lines


def _count_byte(data: bytes, byte: bytes) -> int:
    """Occurrences of one byte, counted by numpy a cache-sized chunk at a time (several times
    faster than ``bytes.count``, which takes a 200 MB export 0.1 s)."""
    array = np.frombuffer(data, dtype=np.uint8)
    value = byte[0]
    return sum(
        int(np.count_nonzero(array[start : start + _COUNT_CHUNK] == value))
        for start in range(0, array.size, _COUNT_CHUNK)
    )


def _parse_by_line(data: bytes, source: str, plan: _Plan) -> _Parsed:
    """Take the file apart line by line (vectorised) so every kind of damage is located."""
    text, bad_utf8_lines = _decode(data)
    lines = _split_lines(text)
    fmt = _detect_format(lines.slice(0, 1)["text"].item() if lines.height else "", source)
    if isinstance(fmt, _HeaderFormat):
        lines = lines.slice(1)
    is_bad_utf8 = pl.col("line").is_in(bad_utf8_lines)
    utf8_rejects = _utf8_rejects(lines.filter(is_bad_utf8), fmt)
    frame, rejects = fmt.split(lines.filter(~is_bad_utf8), source, plan)
    structural = rejects.filter(pl.col("reason") != REASON_BAD_NUMBER).height
    _check_is_gdelt(structural, lines.height, fmt, source)
    return _Parsed(frame, pl.concat([utf8_rejects, rejects]), lines.height, lambda: lines, fmt.name)


def _decode(data: bytes) -> tuple[str, list[int]]:
    """UTF-8 text of the file and the 1-based numbers of lines holding invalid bytes.

    The whole file is decoded at once when it can be. Otherwise it is walked from one invalid
    spot to the next: the bad line is decoded with replacement characters (it will be
    quarantined), everything else strictly, so each byte is decoded at most twice.
    """
    try:
        return _strip_bom(data.decode("utf-8")), []
    except UnicodeDecodeError:
        pass
    view = memoryview(data)
    parts: list[str] = []
    bad_lines: list[int] = []
    pos, line_no = 0, 1  # line_no: the line that holds byte ``pos``
    while True:
        try:
            parts.append(codecs.utf_8_decode(view[pos:], "strict", True)[0])
            return _strip_bom("".join(parts)), bad_lines
        except UnicodeDecodeError as err:
            bad_at = pos + err.start
            start = max(pos, data.rfind(b"\n", pos, bad_at) + 1)
            end = data.find(b"\n", bad_at)
            end = len(data) if end < 0 else end
            parts.append(data[pos:start].decode("utf-8"))
            parts.append(data[start:end].decode("utf-8", "replace"))
            line_no += data.count(b"\n", pos, start)
            bad_lines.append(line_no)
            pos = end


def _strip_bom(text: str) -> str:
    return text.removeprefix("\ufeff")


def _split_lines(text: str) -> pl.DataFrame:
    """Non-empty lines as (line: 1-based number in the file, text without the line ending).

    ``str.split`` in Python and one Series is several times faster than polars splitting one huge
    string value.
    """
    return (
        pl.DataFrame({"text": text.split("\n")})
        .with_row_index("line", offset=1)
        .select(pl.col("line").cast(pl.Int64), pl.col("text").str.strip_suffix("\r"))
        .filter(pl.col("text").str.len_bytes() > 0)
    )


def _check_is_gdelt(rejected: int, total: int, fmt: _Format, source: str) -> None:
    if total and rejected / total > NOT_GDELT_SHARE:
        raise NotGdeltExportError(
            f"{source} is not a GDELT event export: {rejected} of {total} rows have a field "
            f"count matching no GDELT layout; expected {fmt.expected}"
        )


def _no_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=dict(_REJECT_SCHEMA))


@dataclass(frozen=True)
class _Dialect:
    """How polars splits a body of lines into fields."""

    separator: str
    quote_char: str | None = None
    null_value: str | None = None
    """A field text polars turns into null, quoted or not."""

    def read(
        self, body: bytes, schema: Mapping[str, pl.DataType], keep: Sequence[int]
    ) -> pl.DataFrame:
        """The fields at positions ``keep``, typed by ``schema`` (one entry per field of the
        layout); raises if a value does not fit. Fields not kept are skipped unchecked."""
        return pl.read_csv(
            body,
            has_header=False,
            separator=self.separator,
            quote_char=self.quote_char,
            null_values=self.null_value,
            schema=dict(schema),
            columns=list(keep),
        )


_RAW_DIALECT = _Dialect("\t")


# --- formats: lines -> typed fields ---------------------------------------------------------------


class _Format(Protocol):
    name: str

    @property
    def expected(self) -> str: ...

    def split(
        self, lines: pl.DataFrame, source: str, plan: _Plan
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(rows in ``plan.schema``, rejects) of the given lines."""
        ...

    def fields_of(self, text: str) -> tuple[list[str], Names | None]:
        """One line's fields and, where its field count fits a layout, their names."""
        ...


class _RawFormat:
    """GDELT's own tab-separated, header-less layout; fields are never quoted."""

    name = "raw_tsv"
    expected = f"{_RAW_EXPECTED}, or {_HEADER_EXPECTED}"

    def split(
        self, lines: pl.DataFrame, source: str, plan: _Plan
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        counted = lines.with_columns(
            n=pl.col("text").str.count_matches("\t", literal=True) + 1, body=pl.col("text")
        )
        return _split_layouts(counted, gs.LAYOUTS, _RAW_DIALECT, source, plan)

    def fields_of(self, text: str) -> tuple[list[str], Names | None]:
        fields = text.split("\t")
        return fields, gs.LAYOUTS.get(len(fields))


@dataclass(frozen=True)
class _HeaderFormat:
    """A delimited export whose first line names the columns (BigQuery via R, or similar)."""

    separator: str
    names: Names
    name: str = "header_delimited"

    @property
    def expected(self) -> str:
        counts = " or ".join(str(n) for n in sorted(self.layouts()))
        return f"{counts} {self.separator!r}-separated fields per row, as the header says"

    def layouts(self) -> dict[int, Names]:
        """Field count -> names: as the header, with a row index first, without trailing extras."""
        n = len(self.names)
        layouts = {n: self.names, n + 1: (None, *self.names)}
        last_gdelt = max(i for i, name in enumerate(self.names) if name is not None)
        if last_gdelt + 1 < n:
            layouts[last_gdelt + 1] = self.names[: last_gdelt + 1]
        return layouts

    def split(
        self, lines: pl.DataFrame, source: str, plan: _Plan
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """R writes missing values as unquoted ``NA``; polars' null marker would also null a
        quoted ``"NA"`` (a FIPS code), so only a file holding one pays for blanking ``NA`` in
        the text instead."""
        text = pl.col("text")
        unquoted = text.str.replace_all(r'"[^"]*"', "")  # what is left of a line outside quotes
        quoted_na = lines.select(text.str.contains('"NA"', literal=True).any()).item()
        dialect = _Dialect(self.separator, '"', None if quoted_na else "NA")
        unbalanced = text.str.count_matches('"', literal=True) % 2 == 1
        counted = lines.with_columns(
            n=unquoted.str.count_matches(self.separator, literal=True) + 1,
            quoting=pl.when(unbalanced)
            .then(pl.lit(_UNBALANCED))
            .when(~text.str.contains(_well_quoted(self.separator)))
            .then(pl.lit(_MISPLACED_QUOTE)),
            body=_blank_unquoted_na(text, self.separator) if quoted_na else text,
        )
        quoting = counted.filter(pl.col("quoting").is_not_null()).select(
            "line", reason=pl.lit(REASON_BAD_QUOTING), detail="quoting"
        )
        balanced = counted.filter(pl.col("quoting").is_null())
        frame, rejects = _split_layouts(balanced, self.layouts(), dialect, source, plan)
        return frame, pl.concat([quoting, rejects])

    def fields_of(self, text: str) -> tuple[list[str], Names | None]:
        fields = _csv_fields(text, self.separator)
        if fields is None:  # only names a field in a detail: split as if nothing were quoted
            fields = text.split(self.separator)
        return fields, self.layouts().get(len(fields))


def _detect_format(first_line: str, source: str) -> _Format:
    """A first line with a field GLOBALEVENTID is the header row of a header-delimited export;
    anything else is raw GDELT."""
    if not _names_globaleventid(first_line):
        return _RawFormat()
    separator = "\t" if "\t" in first_line else ","
    fields = _csv_fields(first_line, separator)
    if fields is None:
        raise NotGdeltExportError(
            f"{source}: the header row is not GDELT's: it cannot be split into fields (a carriage "
            f"return outside quotes, or a field over 128 KiB); expected {_HEADER_EXPECTED}"
        )
    names = tuple(_CANONICAL_BY_UPPER.get(h.strip().upper()) for h in fields)
    missing = [c for c in gs.HEADER_REQUIRED_COLUMNS if c not in names]
    if missing:
        raise NotGdeltExportError(
            f"{source}: the header row is not GDELT's: it lacks {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}; expected {_HEADER_EXPECTED}, or {_RAW_EXPECTED}"
        )
    repeated = sorted({n for n, count in Counter(names).items() if n is not None and count > 1})
    if repeated:
        raise NotGdeltExportError(
            f"{source}: the header row is not GDELT's: it names {', '.join(repeated[:5])} more "
            f"than once; expected {_HEADER_EXPECTED}"
        )
    return _HeaderFormat(separator=separator, names=names)


def _names_globaleventid(line: str) -> bool:
    """Whether a field of ``line`` (split at tabs and commas; spaces and quotes stripped) is
    GLOBALEVENTID, in any case: a header row. A data row that merely mentions it (a SOURCEURL
    with ``?globaleventid=``) is not one; a substring test took the whole file for a header."""
    return any(
        field.strip().strip('"').strip().upper() == "GLOBALEVENTID"
        for field in re.split(r"[\t,]", line)
    )


def _csv_fields(text: str, separator: str) -> list[str] | None:
    """One line's fields by Python's CSV rules, or None where it refuses the line (``csv.Error``):
    it takes a carriage return outside quotes for a line end, and caps a field at 128 KiB."""
    try:
        return next(csv.reader([text], delimiter=separator))
    except csv.Error:
        return None


_UNBALANCED = "unbalanced double quotes (a quoted field spanning lines is not supported)"
_MISPLACED_QUOTE = (
    "a double quote inside an unquoted field, or text between a closing quote and the separator"
)


def _well_quoted(sep: str) -> str:
    """A line whose every field is unquoted (no ``"`` in it) or wholly quoted (``""`` inside
    for a quote): what polars' CSV reader accepts. Checked first, so a line it would refuse
    costs that line (``bad_quoting``), not the file."""
    sep = r"\t" if sep == "\t" else re.escape(sep)
    quoted = '"(?:[^"]|"")*"'
    plain = f'[^"{sep}]*'
    return f"^(?:{quoted}|{plain})(?:{sep}(?:{quoted}|{plain}))*$"


def _blank_unquoted_na(text: pl.Expr, sep: str) -> pl.Expr:
    """R's unquoted ``NA`` -> empty field; a quoted ``"NA"`` (a FIPS code) stays a value."""
    middle = f"{sep}NA{sep}"
    for _ in range(2):  # ``,NA,NA,``: the second pass catches matches that overlapped the first
        text = text.str.replace_all(middle, sep + sep, literal=True)
    text = pl.when(text.str.starts_with(f"NA{sep}")).then(text.str.slice(2)).otherwise(text)
    return pl.when(text.str.ends_with(f"{sep}NA")).then(text.str.head(-2)).otherwise(text)


def _split_layouts(
    counted: pl.DataFrame,
    layouts: Mapping[int, Names],
    dialect: _Dialect,
    source: str,
    plan: _Plan,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse the lines of each allowed field count ``n``; lines of any other count are rejects.

    Every line of a group has exactly ``n`` fields, so its reads may skip unparsed columns.
    """
    allowed = " or ".join(str(n) for n in sorted(layouts))
    rejects = [
        _formattable(counted.filter(~pl.col("n").is_in(list(layouts)))).select(
            "line",
            reason=pl.lit(REASON_FIELD_COUNT),
            detail=pl.format(f"{{}} fields; expected {allowed}", pl.col("n")),
        )
    ]
    frames = []
    for n, names in layouts.items():
        part = counted.filter(pl.col("n") == n)
        if part.height:
            frame, bad = _parse_part(part, names, dialect, source, plan)
            frames.append(frame)
            rejects.append(bad)
    frame = pl.concat(frames).sort("line") if frames else pl.DataFrame(schema=plan.schema)
    return frame, pl.concat(rejects)


def _parse_part(
    part: pl.DataFrame, names: Names, dialect: _Dialect, source: str, plan: _Plan
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Lines that share a layout: one typed read, or (if a number is bad) strings and casts."""
    body = part.select(pl.col("body").str.join("\n")).item().encode()
    keep = plan.indices(names)
    typed = _typed_read(body, names, dialect, keep)
    if typed is not None and typed.height == part.height:
        return _to_parsed(typed, part["line"], plan), _no_rejects()
    strings = dialect.read(body, dict.fromkeys(_column_names(names), pl.String()), keep)
    if strings.height != part.height:
        raise NotGdeltExportError(
            f"{source}: the CSV parser found {strings.height} rows in "
            f"{part.height} lines; expected one row per line"
        )
    return _numbers_from_strings(strings.with_columns(line=part["line"]), plan)


def _typed_read(
    body: bytes, names: Names, dialect: _Dialect, keep: Sequence[int]
) -> pl.DataFrame | None:
    """The fields at ``keep`` typed by polars in one multi-threaded pass; None if any value does
    not parse."""
    schema = {c: _PARSED_SCHEMA.get(c, pl.String()) for c in _column_names(names)}
    try:
        return dialect.read(body, schema, keep)
    except pl.exceptions.PolarsError:
        return None


def _column_names(names: Names) -> list[str]:
    """Unique names for polars: a field that is not a GDELT column gets a throwaway name."""
    return [name or f"__ignored_{i}" for i, name in enumerate(names)]


def _to_parsed(typed: pl.DataFrame, lines: pl.Series, plan: _Plan) -> pl.DataFrame:
    """A typed read onto ``plan.schema``: padded strings stripped, absent columns null; a field
    read only for the field-count check (the layout's last) is left out."""
    present = set(typed.columns)
    unclean = _unclean_string_columns(typed, plan)
    return typed.select(
        lines.alias("line"),
        *(
            (_clean_string(c) if c in unclean else pl.col(c))
            if c in present
            else pl.lit(None, dtype).alias(c)
            for c, dtype in plan.schema.items()
            if c != "line"
        ),
    )


def _unclean_string_columns(frame: pl.DataFrame, plan: _Plan) -> set[str]:
    """Parsed string columns holding a value with surrounding spaces (BigQuery's ``" AZE"``) or a
    quoted empty string; checking first is much cheaper than stripping every column of a clean
    file."""
    parsed = set(plan.parsed)
    strings = [c for c, dtype in frame.schema.items() if dtype == pl.String and c in parsed]
    if not strings:
        return set()
    flags = frame.select(
        (value.str.starts_with(" ") | value.str.ends_with(" ") | (value.str.len_bytes() == 0)).any()
        for value in (pl.col(c) for c in strings)
    ).row(0)
    return {c for c, unclean in zip(strings, flags, strict=True) if unclean}


def _clean_string(column: str) -> pl.Expr:
    stripped = pl.col(column).str.strip_chars()
    return pl.when(stripped.str.len_bytes() > 0).then(stripped).alias(column)


def _numbers_from_strings(strings: pl.DataFrame, plan: _Plan) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast string fields with ``strict=False``; a null cast from a non-empty value is a reject."""
    present = [c for c in plan.parsed if c in strings.columns]
    cleaned = strings.select("line", *(_clean_string(c) for c in present))
    numbers = [c for c in _NUMBER_COLUMNS if c in present]
    typed = cleaned.with_columns(
        *(_number_expr(c).alias(_TYPED + c) for c in numbers)
    ).with_columns(pl.any_horizontal(_unparsed(c) for c in numbers).alias("bad_number"))
    bad = _formattable(typed.filter(pl.col("bad_number")))
    rejects = bad.select(
        "line",
        reason=pl.lit(REASON_BAD_NUMBER),
        detail=pl.coalesce(_unparsed_detail(c, _number_kind(c)) for c in numbers),
    )
    good = typed.filter(~pl.col("bad_number")).with_columns(
        pl.col(_TYPED + c).alias(c) for c in numbers
    )
    return _to_parsed(good.select(present), good["line"], plan), rejects


def _number_expr(column: str) -> pl.Expr:
    if column in gs.FLOAT_COLUMNS:
        return pl.col(column).cast(pl.Float64, strict=False)
    return _int_expr(column, gs.INT_COLUMNS[column])


def _number_kind(column: str) -> str:
    return "an integer" if column in gs.INT_COLUMNS else "a number"


def _int_expr(column: str, dtype: pl.DataType) -> pl.Expr:
    """Integer parse that also takes R's ``1e+05`` for integral values; overflow -> null."""
    value = pl.col(column)
    as_float = value.cast(pl.Float64, strict=False)
    integral = pl.when(as_float.is_finite() & (as_float == as_float.floor())).then(as_float)
    return pl.coalesce(
        value.cast(pl.Int64, strict=False), integral.cast(pl.Int64, strict=False)
    ).cast(dtype, strict=False)


# --- per-row checks -------------------------------------------------------------------------------


def _with_reason(frame: pl.DataFrame, cutoff: datetime) -> pl.DataFrame:
    """Parse the two dates into ``__t_`` columns and add the first failing check as ``reason``."""
    typed = frame.with_columns(
        _sqldate_expr().alias(_TYPED + gs.DATE_COLUMN),
        _dateadded_expr().alias(_TYPED + gs.DATEADDED_COLUMN),
    )
    checks = [
        (REASON_BAD_NUMBER, pl.col("GLOBALEVENTID").is_null()),
        (REASON_BAD_DATE, pl.any_horizontal(_unparsed(c) for c in _DATES)),
        (REASON_EMPTY_ACTORS, pl.col("Actor1Code").is_null() & pl.col("Actor2Code").is_null()),
        (REASON_FUTURE_DATE, pl.any_horizontal(_after(c, cutoff) for c in _DATES)),
    ]
    reason = pl.when(checks[0][1]).then(pl.lit(checks[0][0]))
    for name, failed in checks[1:]:
        reason = reason.when(failed).then(pl.lit(name))
    return typed.with_columns(reason.otherwise(pl.lit(None, pl.String)).alias("reason"))


def _sqldate_expr() -> pl.Expr:
    value = pl.col(gs.DATE_COLUMN)
    return pl.when(value.str.contains(r"^\d{8}$")).then(value.str.to_date("%Y%m%d", strict=False))


def _dateadded_expr() -> pl.Expr:
    """``YYYYMMDDHHMMSS`` (2.0) or ``YYYYMMDD`` (1.0, midnight) as UTC datetime."""
    value = pl.col(gs.DATEADDED_COLUMN)
    return (
        pl.when(value.str.contains(r"^\d{14}$"))
        .then(value.str.to_datetime("%Y%m%d%H%M%S", time_unit="us", time_zone="UTC", strict=False))
        .when(value.str.contains(r"^\d{8}$"))
        .then(_midnight_utc(value.str.to_date("%Y%m%d", strict=False)))
    )


def _midnight_utc(day: pl.Expr) -> pl.Expr:
    return day.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _unparsed(column: str) -> pl.Expr:
    """True where the column is required but empty, or non-empty but did not parse."""
    typed_null = pl.col(_TYPED + column).is_null()
    if column in gs.REQUIRED_COLUMNS:
        return typed_null
    return typed_null & pl.col(column).is_not_null()


def _after(column: str, cutoff: datetime) -> pl.Expr:
    typed = pl.col(_TYPED + column)
    moment = _midnight_utc(typed) if column == gs.DATE_COLUMN else typed
    return moment > pl.lit(cutoff)


def _split_duplicates(good: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Keep the first row of each GLOBALEVENTID; later ones become ``duplicate_id`` rejects."""
    ids = good["GLOBALEVENTID"]
    if ids.n_unique() == ids.len():  # the usual case, far cheaper than the general path below
        return good, _no_rejects()
    first = pl.col("GLOBALEVENTID").is_first_distinct()
    later = good.filter(~first)
    kept = good.filter(first)
    repeated = pl.col("GLOBALEVENTID").is_in(later["GLOBALEVENTID"].implode())
    first_lines = kept.filter(repeated).select("GLOBALEVENTID", pl.col("line").alias("first_line"))
    rejects = _formattable(later.join(first_lines, on="GLOBALEVENTID", how="left")).select(
        "line",
        reason=pl.lit(REASON_DUPLICATE_ID),
        detail=pl.format(
            "GLOBALEVENTID {} already on line {}", pl.col("GLOBALEVENTID"), pl.col("first_line")
        ),
    )
    return kept, rejects


def _row_rejects(bad: pl.DataFrame, cutoff: datetime) -> pl.DataFrame:
    """``line, reason, detail`` for rows that failed a check; details built for bad rows only."""
    if bad.is_empty():
        return _no_rejects()
    bad = _formattable(bad)
    details = {
        REASON_BAD_NUMBER: pl.lit("GLOBALEVENTID is empty"),
        REASON_BAD_DATE: pl.coalesce(
            _unparsed_detail(gs.DATE_COLUMN, "a YYYYMMDD date"),
            _unparsed_detail(gs.DATEADDED_COLUMN, "a YYYYMMDD or YYYYMMDDHHMMSS time"),
        ),
        REASON_EMPTY_ACTORS: pl.lit("Actor1Code and Actor2Code are both empty"),
        REASON_FUTURE_DATE: pl.coalesce(_future_detail(c, cutoff) for c in _DATES),
    }
    detail = pl.lit(None, pl.String)
    for reason, text in details.items():
        detail = pl.when(pl.col("reason") == reason).then(text).otherwise(detail)
    return bad.select("line", "reason", detail.alias("detail"))


def _formattable(rejects: pl.DataFrame) -> pl.DataFrame:
    """``rejects`` with each column in one chunk, before ``pl.format`` builds their details.

    polars 2.1 panics (``assertion failed: i < self.len()``, a ``PanicException`` no caller
    catches) formatting columns that are chunked differently where one holds an empty chunk, as
    filtering a concatenation of layouts can leave: found by the property tests, a file with a
    bad number in one layout and a repeated GLOBALEVENTID. Reject frames are small, so the copy
    costs nothing that matters."""
    return rejects.rechunk()


def _unparsed_detail(column: str, what: str) -> pl.Expr:
    text = (
        pl.when(pl.col(column).is_null())
        .then(pl.lit(f"{column} is empty"))
        .otherwise(pl.format(f"{column} is not {what}: '{{}}'", pl.col(column)))
    )
    return pl.when(_unparsed(column)).then(text)


def _future_detail(column: str, cutoff: datetime) -> pl.Expr:
    text = f"{column} {{}} is after now + 1 day ({cutoff.isoformat()})"
    return pl.when(_after(column, cutoff)).then(pl.format(text, pl.col(column)))


def _utf8_rejects(bad: pl.DataFrame, fmt: _Format) -> pl.DataFrame:
    """Name the field holding the replacement character; only a handful of lines get here."""
    details = [_utf8_detail(text, fmt) for text in bad["text"].to_list()]
    return pl.DataFrame(
        {"line": bad["line"], "reason": [REASON_INVALID_UTF8] * bad.height, "detail": details},
        schema=dict(_REJECT_SCHEMA),
    )


def _utf8_detail(text: str, fmt: _Format) -> str:
    fields, names = fmt.fields_of(text)
    index = next((i for i, f in enumerate(fields) if "\ufffd" in f), 0)
    name = names[index] if names and names[index] else f"field {index + 1}"
    return f"invalid UTF-8 in {name}: {fields[index]!r} (bytes shown as U+FFFD)"


def _output(plan: _Plan) -> list[pl.Expr]:
    return [pl.col(_TYPED + c).alias(c) if c in _DATES else pl.col(c) for c in plan.output]


def _quarantine(
    rejects: pl.DataFrame, lines: Callable[[], pl.DataFrame], source: str
) -> pl.DataFrame:
    """Attach the file name and the raw source line to every reject, in line order."""
    if rejects.is_empty():
        return pl.DataFrame(schema=dict(QUARANTINE_SCHEMA))
    raw = lines().filter(pl.col("line").is_in(rejects["line"].implode()))
    return (
        rejects.join(raw, on="line", how="left")
        .select(
            pl.lit(source).alias("source"), "line", "reason", "detail", pl.col("text").alias("raw")
        )
        .sort("line")
    )
