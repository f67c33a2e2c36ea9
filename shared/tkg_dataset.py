"""Reader for temporal-KG benchmarks in the RE-Net / RE-GCN directory layout.

A benchmark directory holds ``train.txt``, ``valid.txt`` and ``test.txt`` (one fact per line,
``s r o t`` separated by tabs or spaces, sometimes a fifth column such as ``-1``), and optionally
``entity2id.txt`` / ``relation2id.txt`` (``name<TAB>id``), ``stat.txt`` (counts) and
``entity2label.txt`` / ``relation2label.txt`` (``label<TAB>id``: display names, see
:func:`display_names`). Published copies differ in line endings, time encoding (day index vs.
hours with a step of 24) and name quoting, so the reader tolerates those and fails loudly, naming
file and line, on anything else.

Why it lives in shared/: the folder format is what two stages agree on. The ingest stage writes
such folders (``datasets.py``, ``store_export.py``) and loads them into the event store
(``tkg_ingest.py``); the graph stage trains, evaluates and serves from them. No stage imports
another's folder.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

SPLIT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
LABEL_FILES = {"entities": "entity2label.txt", "relations": "relation2label.txt"}
UNIT_MINUTES = {"minute": 1, "hour": 60, "day": 24 * 60}
_INT = r"[+-]?\d{1,18}"  # at most 18 digits: always fits int64
_QUAD_LINE = rf"^\s*(?P<s>{_INT})\s+(?P<r>{_INT})\s+(?P<o>{_INT})\s+(?P<t>{_INT})(?:\s+{_INT})?\s*$"


class TkgFormatError(ValueError):
    """A benchmark file is malformed; the message names the file and, where known, the line."""


@dataclass(frozen=True)
class TkgDataset:
    """One benchmark: splits as (n, 4) int64 arrays of ``s r o t`` with the original ids.

    ``time_step`` is the gcd of the gaps between consecutive distinct timestamps, in
    ``time_unit``; ``source_sha256`` identifies each split file together with the id files it is
    read with, so re-ingesting an unchanged benchmark is a no-op.
    """

    name: str
    directory: Path
    splits: dict[str, np.ndarray]
    entity_names: list[str]
    relation_names: list[str]
    time_unit: str
    time_step: int
    source_sha256: dict[str, str]

    @property
    def num_entities(self) -> int:
        return len(self.entity_names)

    @property
    def num_relations(self) -> int:
        return len(self.relation_names)

    @property
    def step_minutes(self) -> int:
        """Length of one time step in minutes (ICEWS: 1440 whether t counts days or hours)."""
        return self.time_step * UNIT_MINUTES[self.time_unit]


def load_tkg(directory: Path, *, time_unit: str | None = None) -> TkgDataset:
    """Load and validate a benchmark directory; ``time_unit`` overrides unit detection."""
    directory = Path(directory)
    if time_unit is not None and time_unit not in UNIT_MINUTES:
        raise ValueError(f"time_unit must be one of {sorted(UNIT_MINUTES)}, got {time_unit!r}")
    entity_raw = _read_optional(directory / "entity2id.txt")
    relation_raw = _read_optional(directory / "relation2id.txt")
    entity_names = _parse_names(directory / "entity2id.txt", entity_raw)
    relation_names = _parse_names(directory / "relation2id.txt", relation_raw)
    stat = _parse_stat(directory / "stat.txt", _read_optional(directory / "stat.txt"))
    n_entities = _count(entity_names, stat[0] if stat else None, directory / "entity2id.txt")
    n_relations = _count(relation_names, stat[1] if stat else None, directory / "relation2id.txt")
    splits: dict[str, np.ndarray] = {}
    shas: dict[str, str] = {}
    for split, file_name in SPLIT_FILES.items():
        path = directory / file_name
        if not path.is_file():
            raise TkgFormatError(f"{directory}: missing {file_name} (need train/valid/test.txt)")
        raw = path.read_bytes()
        splits[split] = _parse_quads(path, raw, n_entities, n_relations)
        shas[split] = hashlib.sha256(
            b"\0".join([raw, entity_raw or b"", relation_raw or b""])
        ).hexdigest()
    step = _detect_step(splits)
    return TkgDataset(
        name=directory.name,
        directory=directory,
        splits=splits,
        entity_names=entity_names or _numeric_names(splits, n_entities, (0, 2)),
        relation_names=relation_names or _numeric_names(splits, n_relations, (1,)),
        time_unit=time_unit or _detect_unit(directory, step),
        time_step=step,
        source_sha256=shas,
    )


def display_name(name: str) -> str:
    """A benchmark name as people read it: ICEWS writes spaces as ``_`` (``Barack_Obama``)."""
    return name.replace("_", " ")


def display_names(dataset: TkgDataset) -> dict[str, list[str]]:
    """Entity and relation names for prompts and reports, in id order (``"entities"``,
    ``"relations"``): the folder's entity2label.txt / relation2label.txt when present (written by
    ``geopol dataset from-store``, whose keys are codes), else :func:`display_name` of each name.
    Labels, unlike names, may repeat."""
    names = {"entities": dataset.entity_names, "relations": dataset.relation_names}
    out: dict[str, list[str]] = {}
    for what, file_name in LABEL_FILES.items():
        path = dataset.directory / file_name
        raw = _read_optional(path)
        labels = _parse_names(path, raw, unique=False)
        if labels is None:
            out[what] = [display_name(name) for name in names[what]]
        elif len(labels) != len(names[what]):
            raise TkgFormatError(
                f"{path}: {len(labels)} labels, but the dataset has {len(names[what])} {what}"
            )
        else:
            out[what] = labels
    return out


# --------------------------------------------------------------------- parsing


def _read_optional(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text; a bad byte is reported with its line number."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = raw[: err.start].count(b"\n") + 1
        raise TkgFormatError(f"{path}:{lineno}: not valid UTF-8 ({err.reason})") from None


def _unquote(name: str) -> str:
    """Undo CSV quoting debris: ``"Nicholas_""Nick""_Xenophon"`` -> ``Nicholas_"Nick"_Xenophon``."""
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name


def _parse_names(path: Path, raw: bytes | None, unique: bool = True) -> list[str] | None:
    """``name<TAB>id`` lines -> names indexed by id; ids must be exactly 0..n-1, names unique
    unless ``unique`` is off (display labels)."""
    if raw is None:
        return None
    by_id: dict[int, str] = {}
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(_decode(path, raw).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        raw_name, tab, id_text = line.rpartition("\t")
        if not tab or not raw_name:
            raise TkgFormatError(f"{path}:{lineno}: expected 'name<TAB>id', got {line!r}")
        if not re.fullmatch(r"\d{1,18}", id_text.strip()):
            raise TkgFormatError(f"{path}:{lineno}: id {id_text!r} is not a non-negative integer")
        name, key_id = _unquote(raw_name), int(id_text)
        if key_id in by_id:
            raise TkgFormatError(f"{path}:{lineno}: id {key_id} appears twice")
        if unique and name in first_line:
            raise TkgFormatError(f"{path}:{lineno}: name {name!r} repeats line {first_line[name]}")
        by_id[key_id], first_line[name] = name, lineno
    missing = next((i for i in range(len(by_id)) if i not in by_id), None)
    if missing is not None:
        raise TkgFormatError(f"{path}: ids are not 0..{len(by_id) - 1}: id {missing} is missing")
    return [by_id[i] for i in range(len(by_id))]


def _parse_stat(path: Path, raw: bytes | None) -> tuple[int, int] | None:
    """``stat.txt``: number of entities and relations (further columns ignored)."""
    if raw is None:
        return None
    fields = _decode(path, raw).split()
    if len(fields) < 2 or not all(re.fullmatch(r"\d{1,18}", field) for field in fields[:2]):
        raise TkgFormatError(f"{path}:1: expected '<num_entities> <num_relations>', got {fields}")
    return int(fields[0]), int(fields[1])


def _count(names: list[str] | None, stated: int | None, names_path: Path) -> int | None:
    """Number of ids: from the names file, else stat.txt; both must agree when present."""
    if names is not None and stated is not None and stated != len(names):
        raise TkgFormatError(
            f"{names_path.parent / 'stat.txt'}:1: says {stated} but {names_path} has {len(names)}"
        )
    return len(names) if names is not None else stated


def _parse_quads(
    path: Path, raw: bytes, n_entities: int | None, n_relations: int | None
) -> np.ndarray:
    """Fact lines -> (n, 4) int64, vectorised; blank lines are skipped, anything else must parse."""
    lines = pl.DataFrame({"line": _decode(path, raw).split("\n")}, schema={"line": pl.String})
    lines = lines.with_row_index("lineno", offset=1).filter(pl.col("line").str.strip_chars() != "")
    fields = lines.with_columns(pl.col("line").str.extract_groups(_QUAD_LINE).alias("f")).unnest(
        "f"
    )
    bad = fields.filter(pl.col("s").is_null())
    if bad.height:
        lineno, line = bad.row(0)[:2]
        raise TkgFormatError(f"{path}:{lineno}: {_explain(line)} ({bad.height} bad lines in file)")
    facts = fields.select(pl.col(c).cast(pl.Int64) for c in "srot").to_numpy()
    linenos = fields["lineno"].to_numpy()
    names = path.parent
    _check_ids(path, linenos, facts[:, 0], n_entities, "subject", names / "entity2id.txt")
    _check_ids(path, linenos, facts[:, 1], n_relations, "relation", names / "relation2id.txt")
    _check_ids(path, linenos, facts[:, 2], n_entities, "object", names / "entity2id.txt")
    return facts.reshape(-1, 4)


def _explain(line: str) -> str:
    """Why a fact line did not parse (computed for the first bad line only)."""
    fields = line.split()
    if len(fields) not in (4, 5):
        return f"expected 4 fields 's r o t' (or 5), got {len(fields)}: {line.strip()!r}"
    position = next(i for i, value in enumerate(fields) if not re.fullmatch(_INT, value))
    return f"field {position + 1} {fields[position]!r} is not an integer: {line.strip()!r}"


def _check_ids(
    path: Path, linenos: np.ndarray, ids: np.ndarray, limit: int | None, what: str, names: Path
) -> None:
    """Ids must be >= 0 and, when the id files/stat give a count, below it."""
    bad = ids < 0 if limit is None else (ids < 0) | (ids >= limit)
    if bad.any():
        i = int(np.argmax(bad))
        bound = "must not be negative" if limit is None else f"is outside 0..{limit - 1} ({names})"
        raise TkgFormatError(f"{path}:{linenos[i]}: {what} id {ids[i]} {bound}")


def _numeric_names(
    splits: dict[str, np.ndarray], count: int | None, columns: tuple[int, ...]
) -> list[str]:
    """Keys "0", "1", ... when there is no names file, so store ids still equal benchmark ids."""
    if count is None:
        count = 1 + max(
            (int(facts[:, columns].max()) for facts in splits.values() if len(facts)), default=-1
        )
    return [str(i) for i in range(count)]


def _detect_step(splits: dict[str, np.ndarray]) -> int:
    """gcd of the gaps between consecutive distinct timestamps over all splits (1 if < 2)."""
    times = np.unique(np.concatenate([facts[:, 3] for facts in splits.values()]))
    return int(np.gcd.reduce(np.diff(times))) if times.size > 1 else 1


def _detect_unit(directory: Path, step: int) -> str:
    """Hours when the step is a multiple of 24, GDELT minutes for 15, days for 1."""
    if step % 24 == 0:
        return "hour"
    if step == 15:
        return "minute"
    if step == 1:
        return "day"
    raise TkgFormatError(
        f"{directory}: cannot tell the time unit from a step of {step}; pass time_unit"
    )
