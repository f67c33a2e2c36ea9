"""GDELT event-export layouts and the canonical typed schema every reader maps onto.

The column names are facts copied from GDELT's own header files (``GDELT_1.0_event_Column_Labels_
Header_Row_Sep2016.tsv`` and ``GDELT_2.0_Events_Column_Labels_Header_Row_Sep2016.csv``); they are
written here rather than read at run time so the reader needs no lookup folder.

Layouts, told apart per row by the number of tab-separated fields:

* 57 fields: GDELT 1.0 historical backfile (no SOURCEURL);
* 58 fields: GDELT 1.0 daily update (57 + SOURCEURL);
* 61 fields: GDELT 2.0 export (1.0's 58 with an ``*Geo_ADM2Code`` inserted before each ``*_Lat``).

Canonical columns: the 61 GDELT 2.0 names, in 2.0 order. 2.0 is a superset of 1.0, so keeping its
three ADM2 columns loses nothing from 2.0 files and costs 1.0 rows only three null columns; 1.0
backfile rows also get a null SOURCEURL. Columns of a header-carrying export that are not GDELT's
(an R row index, an extra ``month``) are dropped.

Types: codes stay strings with their leading zeros (EventCode ``"043"``, EventRootCode ``"04"``);
Actor*CountryCode is a CAMEO 3-letter code, *Geo_CountryCode a FIPS 10-4 code and *Geo_FeatureID a
string in 2.0 (it may hold letters), so all of these are strings too.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import polars as pl

V1_COLUMNS: tuple[str, ...] = (
    "GLOBALEVENTID",
    "SQLDATE",
    "MonthYear",
    "Year",
    "FractionDate",
    "Actor1Code",
    "Actor1Name",
    "Actor1CountryCode",
    "Actor1KnownGroupCode",
    "Actor1EthnicCode",
    "Actor1Religion1Code",
    "Actor1Religion2Code",
    "Actor1Type1Code",
    "Actor1Type2Code",
    "Actor1Type3Code",
    "Actor2Code",
    "Actor2Name",
    "Actor2CountryCode",
    "Actor2KnownGroupCode",
    "Actor2EthnicCode",
    "Actor2Religion1Code",
    "Actor2Religion2Code",
    "Actor2Type1Code",
    "Actor2Type2Code",
    "Actor2Type3Code",
    "IsRootEvent",
    "EventCode",
    "EventBaseCode",
    "EventRootCode",
    "QuadClass",
    "GoldsteinScale",
    "NumMentions",
    "NumSources",
    "NumArticles",
    "AvgTone",
    "Actor1Geo_Type",
    "Actor1Geo_FullName",
    "Actor1Geo_CountryCode",
    "Actor1Geo_ADM1Code",
    "Actor1Geo_Lat",
    "Actor1Geo_Long",
    "Actor1Geo_FeatureID",
    "Actor2Geo_Type",
    "Actor2Geo_FullName",
    "Actor2Geo_CountryCode",
    "Actor2Geo_ADM1Code",
    "Actor2Geo_Lat",
    "Actor2Geo_Long",
    "Actor2Geo_FeatureID",
    "ActionGeo_Type",
    "ActionGeo_FullName",
    "ActionGeo_CountryCode",
    "ActionGeo_ADM1Code",
    "ActionGeo_Lat",
    "ActionGeo_Long",
    "ActionGeo_FeatureID",
    "DATEADDED",
    "SOURCEURL",
)
"""GDELT 1.0 daily-update columns in order (58); the historical backfile has the first 57."""


def _with_adm2(columns: tuple[str, ...]) -> tuple[str, ...]:
    """GDELT 2.0 inserts ``<geo>_ADM2Code`` after each ``<geo>_ADM1Code``; the rest is shared."""
    out: list[str] = []
    for name in columns:
        out.append(name)
        if name.endswith("_ADM1Code"):
            out.append(name.replace("_ADM1Code", "_ADM2Code"))
    return tuple(out)


V2_COLUMNS: tuple[str, ...] = _with_adm2(V1_COLUMNS)
"""GDELT 2.0 export columns in order (61)."""

V1_HISTORICAL_FIELDS = 57
V1_DAILY_FIELDS = 58
V2_FIELDS = 61

LAYOUTS: Mapping[int, tuple[str, ...]] = MappingProxyType(
    {
        V1_HISTORICAL_FIELDS: V1_COLUMNS[:V1_HISTORICAL_FIELDS],
        V1_DAILY_FIELDS: V1_COLUMNS,
        V2_FIELDS: V2_COLUMNS,
    }
)
"""Field count of a raw tab-separated row -> the names of its fields in order."""

CANONICAL_COLUMNS: tuple[str, ...] = V2_COLUMNS
"""The columns of every frame the reader returns, whatever the source layout."""

HEADER_REQUIRED_COLUMNS: tuple[str, ...] = V1_COLUMNS[:V1_HISTORICAL_FIELDS]
"""Names a header row must carry to be taken as a GDELT export (the 57 shared by all layouts)."""

INT_COLUMNS: Mapping[str, pl.DataType] = MappingProxyType(
    {
        "GLOBALEVENTID": pl.Int64(),
        "MonthYear": pl.Int32(),
        "Year": pl.Int32(),
        "IsRootEvent": pl.Int8(),
        "QuadClass": pl.Int8(),
        "NumMentions": pl.Int64(),
        "NumSources": pl.Int64(),
        "NumArticles": pl.Int64(),
        "Actor1Geo_Type": pl.Int8(),
        "Actor2Geo_Type": pl.Int8(),
        "ActionGeo_Type": pl.Int8(),
    }
)
"""Integer columns and their types; a non-empty value that is not an integer is a bad row."""

FLOAT_COLUMNS: tuple[str, ...] = (
    "FractionDate",
    "GoldsteinScale",
    "AvgTone",
    "Actor1Geo_Lat",
    "Actor1Geo_Long",
    "Actor2Geo_Lat",
    "Actor2Geo_Long",
    "ActionGeo_Lat",
    "ActionGeo_Long",
)
"""Float64 columns; a non-empty value that is not a number is a bad row."""

DATE_COLUMN = "SQLDATE"
"""The event day, ``YYYYMMDD``; parsed to ``pl.Date``."""

DATEADDED_COLUMN = "DATEADDED"
"""When GDELT added the row: ``YYYYMMDD`` (1.0) or ``YYYYMMDDHHMMSS`` (2.0), UTC; parsed to
``pl.Datetime("us", "UTC")`` (1.0 values at midnight)."""

REQUIRED_COLUMNS: tuple[str, ...] = ("GLOBALEVENTID", DATE_COLUMN, DATEADDED_COLUMN)
"""Columns that may not be empty: the row's identity and its two times."""

STRING_COLUMNS: tuple[str, ...] = tuple(
    c
    for c in CANONICAL_COLUMNS
    if c not in INT_COLUMNS and c not in FLOAT_COLUMNS and c not in (DATE_COLUMN, DATEADDED_COLUMN)
)
"""Codes, names and URLs: kept as stripped strings, empty -> null, leading zeros kept."""

CODE_COLUMNS: tuple[str, ...] = tuple(
    c for c in STRING_COLUMNS if c.endswith(("Code", "FeatureID"))
)
"""The string columns that hold codes (CAMEO, FIPS, ADM, feature ids) rather than free text."""

DATEADDED_DTYPE = pl.Datetime("us", "UTC")

CANONICAL_SCHEMA: Mapping[str, pl.DataType] = MappingProxyType(
    {
        c: (
            INT_COLUMNS[c]
            if c in INT_COLUMNS
            else pl.Float64()
            if c in FLOAT_COLUMNS
            else pl.Date()
            if c == DATE_COLUMN
            else DATEADDED_DTYPE
            if c == DATEADDED_COLUMN
            else pl.String()
        )
        for c in CANONICAL_COLUMNS
    }
)
"""Column -> dtype of the frame ``read_export`` returns, in canonical order."""
