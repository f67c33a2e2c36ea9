"""Map typed GDELT rows onto temporal-graph quadruples (subject, relation, object, t).

Why a config object: what an "entity" and a "relation" are is a modelling choice (a CAMEO actor
code such as ``USAGOV``, the free-text actor name, or just the country; the 20 CAMEO root codes or
the ~300 leaf codes) and the time step decides what "at the same time" means. Freezing and
validating these choices in one place lets a stored quadruple set record exactly how it was made.

Rows that cannot become a quadruple under the chosen config are filtered, not quarantined: they
are valid GDELT, only unusable for this mapping, so they are counted per reason and not written
anywhere. Filters run in this order and a row is counted under the first one that drops it:
``duplicate_event`` (a GLOBALEVENTID seen earlier in the frame), ``not_root_event``,
``low_mentions``, ``missing_actor``, ``missing_relation`` and ``missing_time``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import polars as pl
import structlog

from shared.event_store import step_start as store_step_start

log = structlog.get_logger(__name__)

EntityKey = Literal["actor_code", "actor_name", "country_code"]
RelationLevel = Literal["root", "base", "code"]
TimeField = Literal["sqldate", "dateadded"]

ENTITY_COLUMNS: Mapping[str, tuple[str, str]] = {
    "actor_code": ("Actor1Code", "Actor2Code"),
    "actor_name": ("Actor1Name", "Actor2Name"),
    "country_code": ("Actor1CountryCode", "Actor2CountryCode"),
}
"""Entity key -> (subject column, object column) of the canonical GDELT frame."""

RELATION_COLUMNS: Mapping[str, str] = {
    "root": "EventRootCode",
    "base": "EventBaseCode",
    "code": "EventCode",
}
"""Relation level -> the CAMEO code column used as the relation."""

TIME_COLUMNS: Mapping[str, str] = {"sqldate": "SQLDATE", "dateadded": "DATEADDED"}

_FACT_COLUMNS = ("GoldsteinScale", "NumMentions", "QuadClass", "IsRootEvent", "SOURCEURL")
"""Columns read whatever the config: the quadruple's attributes, the root-event flag and the
article URL (null in GDELT 1.0 backfile rows, which have no SOURCEURL field)."""

QUAD_SCHEMA: Mapping[str, pl.DataType] = {
    "event_id": pl.Int64(),
    "subject": pl.String(),
    "relation": pl.String(),
    "object": pl.String(),
    "t": pl.Int64(),
    "goldstein": pl.Float64(),
    "num_mentions": pl.Int64(),
    "quad_class": pl.Int8(),
    "source_url": pl.String(),
}
"""The exact columns and types of ``MappingResult.quads``."""

MINUTES_PER_DAY = 1440
STEP_GRANULARITY_MINUTES = 15
"""GDELT 2.0 publishes every 15 minutes; a finer step would only create empty steps."""

_KEEP = "_keep_"  # prefix of the per-filter keep flags while filtering

FILTER_REASONS: tuple[str, ...] = (
    "duplicate_event",
    "not_root_event",
    "low_mentions",
    "missing_actor",
    "missing_relation",
    "missing_time",
)


NO_ACTOR = "-"
"""The entity standing for "no second actor" when ``require_both_actors`` is off."""


@dataclass(frozen=True)
class MappingConfig:
    """How GDELT rows become quadruples; invalid combinations fail at construction.

    ``step_minutes`` must be a positive multiple of 15. A step shorter than a day needs
    ``time_field="dateadded"`` (SQLDATE only knows the day), and with ``"sqldate"`` the step must
    be whole days. ``min_mentions`` of 0 keeps rows whose NumMentions is missing. With
    ``require_both_actors=False`` a row needs an entity on one side only; the other side of its
    quadruple becomes the entity ``NO_ACTOR`` (a quadruple always has two ends, and the store
    refuses null keys); a row with neither is still dropped as ``missing_actor``.
    """

    entity_key: EntityKey = "actor_code"
    relation_level: RelationLevel = "code"
    require_both_actors: bool = True
    root_events_only: bool = False
    min_mentions: int = 1
    time_field: TimeField = "sqldate"
    step_minutes: int = MINUTES_PER_DAY
    dedupe: bool = True

    def __post_init__(self) -> None:
        _check_choice("entity_key", self.entity_key, ENTITY_COLUMNS)
        _check_choice("relation_level", self.relation_level, RELATION_COLUMNS)
        _check_choice("time_field", self.time_field, TIME_COLUMNS)
        for name in ("require_both_actors", "root_events_only", "dedupe"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not _is_int(self.min_mentions) or self.min_mentions < 0:
            raise ValueError(f"min_mentions must be an integer >= 0, got {self.min_mentions!r}")
        _check_step(self.step_minutes)
        if self.time_field == "sqldate" and self.step_minutes % MINUTES_PER_DAY:
            raise ValueError(
                f"step_minutes={self.step_minutes} is not a whole number of days, but "
                f"time_field='sqldate' has day resolution only; use time_field='dateadded' "
                f"(GDELT 2.0's 15-minute DATEADDED) for sub-day steps"
            )

    @property
    def needed_columns(self) -> tuple[str, ...]:
        """The canonical GDELT columns ``to_quadruples`` reads under this config, so a reader can
        skip building the others (``read_export(..., columns=cfg.needed_columns)``)."""
        subject_col, object_col = ENTITY_COLUMNS[self.entity_key]
        return (
            "GLOBALEVENTID",
            subject_col,
            RELATION_COLUMNS[self.relation_level],
            object_col,
            TIME_COLUMNS[self.time_field],
            *_FACT_COLUMNS,
        )


@dataclass(frozen=True)
class MappingResult:
    """Quadruples plus how many input rows each filter dropped."""

    quads: pl.DataFrame
    rows_in: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    """Filter reason -> rows dropped (every reason in ``FILTER_REASONS``, zeros included)."""


def to_quadruples(rows: pl.DataFrame, cfg: MappingConfig) -> MappingResult:
    """Turn canonical GDELT rows (``gdelt_reader.read_export(...).rows``) into quadruples.

    ``t`` is ``floor(epoch seconds of the event time / (step_minutes * 60))``; the event time is
    SQLDATE at 00:00 UTC or DATEADDED. SQLDATE may be ``pl.Date`` or an integer ``YYYYMMDD``.
    """
    subject_col, object_col = ENTITY_COLUMNS[cfg.entity_key]
    keys = {
        "subject": subject_col,
        "relation": RELATION_COLUMNS[cfg.relation_level],
        "object": object_col,
    }
    unclean = _unclean_columns(rows, keys.values())
    frame = rows.select(
        pl.col("GLOBALEVENTID").cast(pl.Int64).alias("event_id"),
        *(
            (_nonempty(column) if column in unclean else pl.col(column).cast(pl.String)).alias(name)
            for name, column in keys.items()
        ),
        _step_index(rows.schema[TIME_COLUMNS[cfg.time_field]], cfg).alias("t"),
        pl.col("GoldsteinScale").cast(pl.Float64).alias("goldstein"),
        pl.col("NumMentions").cast(pl.Int64).alias("num_mentions"),
        pl.col("QuadClass").cast(pl.Int8).alias("quad_class"),
        pl.col("SOURCEURL").cast(pl.String).alias("source_url"),
        pl.col("IsRootEvent").cast(pl.Int8).alias("_is_root"),
    )
    filters = _filters(cfg, has_duplicates=frame["event_id"].n_unique() < frame.height)
    flagged = frame.with_columns(
        keep.fill_null(False).alias(_KEEP + reason) for reason, keep in filters
    )
    dropped = _dropped_by_first_failure(flagged, [reason for reason, _ in filters])
    kept = pl.all_horizontal(pl.col(_KEEP + reason) for reason, _ in filters)
    quads = flagged.filter(kept).select(list(QUAD_SCHEMA))
    if not cfg.require_both_actors:
        quads = quads.with_columns(pl.col("subject", "object").fill_null(NO_ACTOR))
    log.info(
        "quadruples_mapped",
        rows_in=rows.height,
        quads=quads.height,
        dropped=dropped,
        entity_key=cfg.entity_key,
        relation_level=cfg.relation_level,
        step_minutes=cfg.step_minutes,
    )
    return MappingResult(quads=quads, rows_in=rows.height, dropped=dropped)


def step_start(t: int, step_minutes: int) -> datetime:
    """The UTC start of time step ``t``: the inverse of ``t`` in ``to_quadruples``.

    ``step_start(t, m) <= event time < step_start(t + 1, m)`` for every quadruple of step ``t``.
    """
    _check_step(step_minutes)
    return store_step_start(t, step_minutes)


def _filters(cfg: MappingConfig, *, has_duplicates: bool) -> list[tuple[str, pl.Expr]]:
    """(reason, rows to keep) in application order; disabled filters keep everything.

    ``has_duplicates`` (whether any event id repeats) lets a frame without repeats, the usual
    case, skip ``is_first_distinct``, which costs far more than counting distinct ids.
    """
    keep_all = pl.lit(True)
    has_subject, has_object = pl.col("subject").is_not_null(), pl.col("object").is_not_null()
    mentions = pl.col("num_mentions") >= cfg.min_mentions
    return [
        (
            "duplicate_event",
            pl.col("event_id").is_first_distinct() if cfg.dedupe and has_duplicates else keep_all,
        ),
        ("not_root_event", pl.col("_is_root") == 1 if cfg.root_events_only else keep_all),
        ("low_mentions", mentions.fill_null(False) if cfg.min_mentions > 0 else keep_all),
        (
            "missing_actor",
            (has_subject & has_object) if cfg.require_both_actors else (has_subject | has_object),
        ),
        ("missing_relation", pl.col("relation").is_not_null()),
        ("missing_time", pl.col("t").is_not_null()),
    ]


def _dropped_by_first_failure(flagged: pl.DataFrame, reasons: list[str]) -> dict[str, int]:
    """Rows dropped per filter, each counted under the first filter that fails it: the counts of
    applying the filters one after another, from one pass instead of a frame copy per filter.

    Filters are row-wise except ``duplicate_event``, which comes first and so sees every row
    either way.
    """
    passed = pl.lit(True)
    counts = []
    for reason in reasons:
        keep = pl.col(_KEEP + reason)
        counts.append((passed & ~keep).sum().alias(reason))
        passed = passed & keep
    return {reason: int(n) for reason, n in flagged.select(counts).row(0, named=True).items()}


def _unclean_columns(rows: pl.DataFrame, columns: Iterable[str]) -> set[str]:
    """Key columns holding an empty value or one with surrounding whitespace.

    Only these pay for ``_nonempty``: rows from the reader are usually clean already, and
    testing for the need is much cheaper than stripping every value.
    """
    flags = rows.select(
        (value.str.contains(r"^\s|\s$") | (value.str.len_bytes() == 0)).any().alias(column)
        for column, value in ((c, pl.col(c).cast(pl.String)) for c in dict.fromkeys(columns))
    )
    return {column for column, unclean in flags.row(0, named=True).items() if unclean}


def _nonempty(column: str) -> pl.Expr:
    """The column stripped, with empty strings as null (the reader does this; others may not)."""
    stripped = pl.col(column).cast(pl.String).str.strip_chars()
    return pl.when(stripped.str.len_bytes() > 0).then(stripped)


def _step_index(dtype: pl.DataType, cfg: MappingConfig) -> pl.Expr:
    column = pl.col(TIME_COLUMNS[cfg.time_field])
    if dtype.is_integer():  # SQLDATE as YYYYMMDD
        column = column.cast(pl.String).str.to_date("%Y%m%d", strict=False)
    if dtype == pl.Date or dtype.is_integer():
        column = column.cast(pl.Datetime("us"))  # midnight; naive datetimes count as UTC
    return column.dt.epoch("s") // (cfg.step_minutes * 60)


def _check_choice(name: str, value: object, allowed: Mapping[str, object]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


def _check_step(step_minutes: int) -> None:
    if not _is_int(step_minutes) or step_minutes <= 0 or step_minutes % STEP_GRANULARITY_MINUTES:
        raise ValueError(
            f"step_minutes must be a positive multiple of "
            f"{STEP_GRANULARITY_MINUTES}, got {step_minutes!r}"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
