"""Turn simulated events into GDELT 2.0 export rows and files that look like the real feed.

Why: downstream (reader, mapping, store) must not know whether a file came from GDELT or from the
simulator, so rows follow the real export exactly: 61 tab-separated fields, no header, LF line
ends, empty strings for empty fields, CAMEO event codes as zero-led strings, and one file per
15-minute slot named ``YYYYMMDDHHMMSS.export.CSV`` (optionally zipped as GDELT ships it).

Facts are written here rather than read from the team data folder so the product runs anywhere:
the 61 column names (GDELT 2.0 event codebook, Sep 2016) and, per country, the GDELT actor name,
the FIPS 10-4 code and the country-level centroid that GDELT uses for ``Geo_Type`` 1 matches.
Event codes and Goldstein values come from the packaged ``services/ingest/cameo/event_codes.tsv``.

Per-event details that the world does not model are drawn from a writer RNG seeded from the same
seed (stream ``[seed, 1]``): SQLDATE lag (usually the slot's day, sometimes one or two days
earlier), IsRootEvent, mention/source/article counts, AvgTone (a word-count ratio whose mean
follows the Goldstein value, as real tone correlates with cooperation), and which geo fields are
filled. Source URLs use the reserved ``example.com`` domain, so nobody mistakes them for news.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import numpy as np

from services.ingest.gdelt_schema import V2_COLUMNS
from services.ingest.simulator.world import QUAD_OF_ROOT, Actor, Codebook, StepEvents
from shared.atomic import atomic_write_bytes

COLUMNS = V2_COLUMNS
"""The 61 GDELT 2.0 event export columns, in file order."""

FIRST_GLOBALEVENTID = 1_100_000_001
"""First id of a run: in the GDELT 2.0 range (ids there are above 410 million since Feb 2015)."""

SLOT = timedelta(minutes=15)
"""GDELT 2.0 publishes one export file per 15 minutes; one world step is one such slot."""


@dataclass(frozen=True)
class CountryGeo:
    """How GDELT names and geolocates a country: actor name, geo name, FIPS code, centroid."""

    actor_name: str
    geo_name: str
    fips: str
    lat: str
    lon: str


def _country(name: str, fips: str, lat: str, lon: str) -> CountryGeo:
    """Country row whose actor name is the upper-cased geo name, as in GDELT."""
    return CountryGeo(actor_name=name.upper(), geo_name=name, fips=fips, lat=lat, lon=lon)


COUNTRIES: dict[str, CountryGeo] = {
    "USA": _country("United States", "US", "39.828175", "-98.5795"),
    "RUS": _country("Russia", "RS", "60", "100"),
    "CHN": _country("China", "CH", "35", "105"),
    "UKR": _country("Ukraine", "UP", "49", "32"),
    "GBR": _country("United Kingdom", "UK", "54", "-2"),
    "FRA": _country("France", "FR", "46", "2"),
    "DEU": _country("Germany", "GM", "51", "9"),
    "ITA": _country("Italy", "IT", "42.8333", "12.8333"),
    "ESP": _country("Spain", "SP", "40", "-4"),
    "POL": _country("Poland", "PL", "52", "20"),
    "HUN": _country("Hungary", "HU", "47", "20"),
    "GRC": _country("Greece", "GR", "39", "22"),
    "SRB": _country("Serbia", "RI", "43.75", "20.75"),
    "SWE": _country("Sweden", "SW", "62", "15"),
    "FIN": _country("Finland", "FI", "64", "26"),
    "NOR": _country("Norway", "NO", "62", "10"),
    "BLR": _country("Belarus", "BO", "53", "28"),
    "MDA": _country("Moldova", "MD", "47", "29"),
    "GEO": _country("Georgia", "GG", "42", "43.5"),
    "ARM": _country("Armenia", "AM", "40", "45"),
    "AZE": _country("Azerbaijan", "AJ", "40.5", "47.5"),
    "TUR": _country("Turkey", "TU", "39", "35"),
    "ISR": _country("Israel", "IS", "31.5", "34.75"),
    "LBN": _country("Lebanon", "LE", "33.8333", "35.8333"),
    "SYR": _country("Syria", "SY", "35", "38"),
    "JOR": _country("Jordan", "JO", "31", "36"),
    "IRQ": _country("Iraq", "IZ", "33", "44"),
    "IRN": _country("Iran", "IR", "32", "53"),
    "SAU": _country("Saudi Arabia", "SA", "25", "45"),
    "YEM": _country("Yemen", "YM", "15", "48"),
    "QAT": _country("Qatar", "QA", "25.5", "51.25"),
    "ARE": _country("United Arab Emirates", "AE", "24", "54"),
    "EGY": _country("Egypt", "EG", "27", "30"),
    "LBY": _country("Libya", "LY", "25", "17"),
    "SDN": _country("Sudan", "SU", "16", "30"),
    "ETH": _country("Ethiopia", "ET", "8", "38"),
    "SOM": _country("Somalia", "SO", "6", "48"),
    "KEN": _country("Kenya", "KE", "1", "38"),
    "NGA": _country("Nigeria", "NI", "10", "8"),
    "MLI": _country("Mali", "ML", "17", "-4"),
    "COD": _country("Democratic Republic of the Congo", "CG", "0", "25"),
    "ZAF": _country("South Africa", "SF", "-29", "24"),
    "AFG": _country("Afghanistan", "AF", "33", "65"),
    "PAK": _country("Pakistan", "PK", "30", "70"),
    "IND": _country("India", "IN", "20", "77"),
    "BGD": _country("Bangladesh", "BG", "24", "90"),
    "MMR": _country("Myanmar", "BM", "22", "98"),
    "THA": _country("Thailand", "TH", "15", "100"),
    "VNM": _country("Vietnam", "VM", "16", "106"),
    "MYS": _country("Malaysia", "MY", "2.5", "112.5"),
    "IDN": _country("Indonesia", "ID", "-5", "120"),
    "PHL": _country("Philippines", "RP", "13", "122"),
    "TWN": _country("Taiwan", "TW", "23.5", "121"),
    "KOR": _country("South Korea", "KS", "37", "127.5"),
    "PRK": _country("North Korea", "KN", "40", "127"),
    "JPN": _country("Japan", "JA", "36", "138"),
    "KAZ": _country("Kazakhstan", "KZ", "48", "68"),
    "AUS": _country("Australia", "AS", "-25", "135"),
    "CAN": _country("Canada", "CA", "60", "-95"),
    "MEX": _country("Mexico", "MX", "23", "-102"),
    "CUB": _country("Cuba", "CU", "21.5", "-80"),
    "VEN": _country("Venezuela", "VE", "8", "-66"),
    "COL": _country("Colombia", "CO", "4", "-72"),
    "BRA": _country("Brazil", "BR", "-10", "-55"),
    "ARG": _country("Argentina", "AR", "-34", "-64"),
}
"""Countries the world draws actors from, keyed by CAMEO code (here equal to ISO 3166 alpha-3)."""

_SQLDATE_LAG_DAYS = np.array([0, 1, 2])
_SQLDATE_LAG_PROBS = np.array([0.88, 0.09, 0.03])
_ACTOR_GEO_FILLED = 0.85
_ACTION_AT_OBJECT = 0.5


def load_codebook() -> Codebook:
    """Read CAMEO codes and Goldstein values from the packaged table (works when installed)."""
    table = resources.files("services.ingest").joinpath("cameo", "event_codes.tsv")
    with table.open(encoding="utf-8") as handle:
        rows = [
            (row["code"], float(row["goldstein"])) for row in csv.DictReader(handle, delimiter="\t")
        ]
    return Codebook.from_rows(rows)


def slot_time(start: datetime, t: int) -> datetime:
    """The DATEADDED time of slot ``t`` of a run starting at ``start``."""
    return start + t * SLOT


def slot_stamp(moment: datetime) -> str:
    """``YYYYMMDDHHMMSS``: DATEADDED and the export file's stem."""
    return moment.strftime("%Y%m%d%H%M%S")


def export_name(moment: datetime, zipped: bool) -> str:
    """GDELT's file name for a slot: ``YYYYMMDDHHMMSS.export.CSV`` (``.zip`` when zipped)."""
    return f"{slot_stamp(moment)}.export.CSV" + (".zip" if zipped else "")


def _date_fields(day: datetime) -> list[str]:
    """SQLDATE, MonthYear, Year, FractionDate (GDELT's ``(month-1)*30+day)/365`` approximation)."""
    fraction = day.year + ((day.month - 1) * 30 + day.day) / 365.0
    return [day.strftime("%Y%m%d"), day.strftime("%Y%m"), str(day.year), f"{fraction:.4f}"]


def _actor_fields(actor: Actor) -> list[str]:
    """The ten Actor*Code..Type3Code fields for one actor (no group/ethnic/religion codes)."""
    name = COUNTRIES[actor.country].actor_name
    return [actor.code, name, actor.country, "", "", "", "", actor.role, "", ""]


def _geo_fields(country: str | None) -> list[str]:
    """Country-level (Geo_Type 1) location fields as GDELT writes them, or eight empty fields."""
    if country is None:
        return ["0", "", "", "", "", "", "", ""]
    geo = COUNTRIES[country]
    return ["1", geo.geo_name, geo.fips, geo.fips, "", geo.lat, geo.lon, geo.fips]


@dataclass(frozen=True)
class _EventDetails:
    """Per-event fields the world does not model, drawn in one vectorised go per slot."""

    lag_days: np.ndarray
    is_root: np.ndarray
    mentions: np.ndarray
    sources: np.ndarray
    articles: np.ndarray
    tone: np.ndarray
    geo_subject: np.ndarray
    geo_object: np.ndarray
    action_at_object: np.ndarray


def _draw_details(goldstein: np.ndarray, rng: np.random.Generator) -> _EventDetails:
    """Counts, tone and geo choices; tone's mean follows Goldstein, counts are heavy-ish tailed."""
    k = goldstein.size
    articles = rng.geometric(0.4, k)
    words = rng.integers(150, 1500, k)
    positive = rng.poisson(words * np.clip(0.030 + 0.002 * goldstein, 0.002, None))
    negative = rng.poisson(words * np.clip(0.032 - 0.002 * goldstein, 0.002, None))
    return _EventDetails(
        lag_days=rng.choice(_SQLDATE_LAG_DAYS, size=k, p=_SQLDATE_LAG_PROBS),
        is_root=rng.random(k) < 0.45,
        articles=articles,
        sources=1 + rng.binomial(articles - 1, 0.3),
        mentions=articles + rng.poisson(0.5 * articles),
        tone=100.0 * (positive - negative) / words,
        geo_subject=rng.random(k) < _ACTOR_GEO_FILLED,
        geo_object=rng.random(k) < _ACTOR_GEO_FILLED,
        action_at_object=rng.random(k) < _ACTION_AT_OBJECT,
    )


def format_rows(
    events: StepEvents,
    actors: Sequence[Actor],
    codebook: Codebook,
    moment: datetime,
    first_id: int,
    rng: np.random.Generator,
) -> list[str]:
    """One GDELT 2.0 export line (61 tab-separated fields + LF) per event, ids from ``first_id``."""
    goldstein = np.array([codebook.goldstein[c] for c in events.code], dtype=np.float64)
    details = _draw_details(goldstein, rng)
    stamp = slot_stamp(moment)
    lines = []
    for k in range(len(events)):
        subject = actors[events.subject[k]]
        obj = actors[events.object[k]]
        code = codebook.codes[events.code[k]]
        event_id = first_id + k
        day = moment - timedelta(days=int(details.lag_days[k]))
        action = obj if details.action_at_object[k] else subject
        fields = [
            str(event_id),
            *_date_fields(day),
            *_actor_fields(subject),
            *_actor_fields(obj),
            "1" if details.is_root[k] else "0",
            code,
            code[:3],
            code[:2],
            str(QUAD_OF_ROOT[events.root[k]]),
            repr(float(goldstein[k])),
            str(details.mentions[k]),
            str(details.sources[k]),
            str(details.articles[k]),
            f"{details.tone[k]:.15g}",
            *_geo_fields(subject.country if details.geo_subject[k] else None),
            *_geo_fields(obj.country if details.geo_object[k] else None),
            *_geo_fields(action.country),
            stamp,
            _source_url(day, subject, obj, event_id),
        ]
        lines.append("\t".join(fields) + "\n")
    return lines


def _source_url(day: datetime, subject: Actor, obj: Actor, event_id: int) -> str:
    """A plausible-looking but clearly synthetic article URL (reserved example.com domain)."""
    slug = f"{subject.code}-{obj.code}".lower()
    return f"https://news.example.com/world/{day:%Y/%m/%d}/{slug}-{event_id}.html"


def write_export(directory: Path, moment: datetime, lines: Sequence[str], zipped: bool) -> Path:
    """Write one slot's file (UTF-8, LF); zipped files are byte-stable (fixed member timestamp).

    The folder is watched by a running ingest stage, so the file appears whole or not at all
    (a temp file in the same folder, then a rename): ingest never reads half an export.
    """
    path = directory / export_name(moment, zipped)
    payload = "".join(lines).encode("utf-8")
    if zipped:
        member = zipfile.ZipInfo(
            export_name(moment, zipped=False), date_time=moment.timetuple()[:6]
        )
        member.compress_type = zipfile.ZIP_DEFLATED
        member.external_attr = 0o644 << 16
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(member, payload)
        payload = buffer.getvalue()
    atomic_write_bytes(path, payload)
    return path
