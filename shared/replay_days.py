"""Cut GDELT event files into one file per day (SQLDATE), so a replay can deliver them a day at a
time as a live feed would.

Lines are copied byte for byte (the ingest reader, not this, decides what a row means): a file
with a GDELT header row (BigQuery via R) keeps its header at the top of every day it is cut
into, and a row with one field more than the header (R's row index) is dated by the field after
it; raw GDELT (tab-separated, no header) is dated by its second field. A line whose date cannot
be read is not dropped: it goes to an ``undated`` file delivered with the history, where ingest
quarantines it with its reason, as it would any malformed row.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

SQLDATE = "SQLDATE"
RAW_SQLDATE_FIELD = 1  # GLOBALEVENTID, SQLDATE, ... in both GDELT 1.0 and 2.0
SUFFIXES = (".csv", ".tsv")


class ReplayDataError(ValueError):
    """Event files a replay cannot cut into days; the message names the file."""


@dataclass
class DayFiles:
    """Every day's lines per source file (with that file's header, if it has one), and the
    lines no date could be read from."""

    days: dict[date, dict[str, list[bytes]]] = field(default_factory=lambda: defaultdict(dict))
    undated: dict[str, list[bytes]] = field(default_factory=dict)
    headers: dict[str, bytes] = field(default_factory=dict)

    def write_day(self, day: date | None, folder: Path) -> list[Path]:
        """Write the files of ``day`` (None: the undated lines) into ``folder``; each lands
        under a temporary name first, so a watcher never reads half a file."""
        by_source = self.undated if day is None else self.days.get(day, {})
        stamp = "00000000-undated" if day is None else day.strftime("%Y%m%d")
        written = []
        folder.mkdir(parents=True, exist_ok=True)
        for source, lines in sorted(by_source.items()):
            stem, suffix = source.rsplit(".", 1)
            target = folder / f"{stamp}.{stem}.{suffix}"
            partial = folder / f".{target.name}.partial"
            partial.write_bytes(self.headers.get(source, b"") + b"".join(lines))
            partial.replace(target)
            written.append(target)
        return written


def event_files(folder: Path) -> list[Path]:
    """The event files of a data folder, in name order (a SOURCE.md beside them is skipped)."""
    if folder.is_file():
        return [folder]
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not found:
        raise ReplayDataError(f"{folder}: no {' or '.join(SUFFIXES)} event files")
    return found


def split_days(paths: Iterable[Path]) -> DayFiles:
    """Every line of ``paths`` under the day its SQLDATE names."""
    cut = DayFiles()
    for path in paths:
        lines = path.read_bytes().splitlines(keepends=True)
        if not lines:
            continue
        header = _header_fields(lines[0])
        position, body = RAW_SQLDATE_FIELD, lines
        if header is not None:
            position, body = header.index(SQLDATE), lines[1:]
            cut.headers[path.name] = lines[0] if lines[0].endswith(b"\n") else lines[0] + b"\n"
        for line in body:
            if not line.strip():
                continue
            line = line if line.endswith(b"\n") else line + b"\n"
            day = _day_of(line, position, header)
            if day is None:
                cut.undated.setdefault(path.name, []).append(line)
            else:
                cut.days[day].setdefault(path.name, []).append(line)
    return cut


def _fields(line: bytes) -> list[str] | None:
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    delimiter = "\t" if "\t" in text else ","
    try:
        return next(csv.reader([text], delimiter=delimiter))
    except (csv.Error, StopIteration):
        return None


def _header_fields(line: bytes) -> list[str] | None:
    """The upper-cased column names of a GDELT header row, or None for a data row."""
    fields = _fields(line)
    names = [f.strip().upper() for f in fields or []]
    return names if "GLOBALEVENTID" in names and SQLDATE in names else None


def _day_of(line: bytes, position: int, header: list[str] | None) -> date | None:
    fields = _fields(line)
    if fields is None:
        return None
    if header is not None and len(fields) == len(header) + 1:
        position += 1  # R's row index before the named fields
    if position >= len(fields):
        return None
    text = fields[position].strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
