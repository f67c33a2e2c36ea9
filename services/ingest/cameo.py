"""CAMEO code labels: event codes (with Goldstein values) and composed actor codes.

Why: quadruples carry raw CAMEO codes (``"043"``, ``"USAGOV"``) because codes are stable keys;
people, prompts for the LLM and reports need words. The tables are facts shipped beside this module
(``services/ingest/cameo/*.tsv``), read once per process through importlib.resources so they are
found in an installed package as well as in a checkout.

A CAMEO actor code is a run of 3-character chunks: usually a country or region first, then known
group, religion and role-type chunks; ethnic codes are lower case (``"bdaUAF"``). Each chunk is
looked up in the tables in an order that depends on its position (a first chunk is most likely a
country, a later one a role), and a chunk no table knows is kept verbatim.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

_PACKAGE = "services.ingest"
_TABLE_DIR = "cameo"
_CHUNK = 3

_FIRST_CHUNK_TABLES = ("countries", "known_groups", "religions", "actor_types", "ethnic")
_LATER_CHUNK_TABLES = ("actor_types", "known_groups", "religions", "countries", "ethnic")


@functools.cache
def _table(name: str) -> Mapping[str, tuple[str, ...]]:
    """``<name>.tsv`` as code -> the other columns; the first row of a repeated code wins."""
    text = (resources.files(_PACKAGE) / _TABLE_DIR / f"{name}.tsv").read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    table: dict[str, tuple[str, ...]] = {}
    for code, *values in rows[1:]:
        table.setdefault(code.strip(), tuple(v.strip() for v in values))
    return MappingProxyType(table)


def _event(code: str) -> tuple[str, ...]:
    """(label, goldstein text) of an event code; KeyError naming the code when unknown."""
    try:
        return _table("event_codes")[code.strip()]
    except KeyError:
        raise KeyError(f"unknown CAMEO event code {code!r}") from None


def relation_label(code: str) -> str:
    """Label of a CAMEO event code at any level: ``"04"`` -> ``"CONSULT"``; unknown -> the code."""
    try:
        return _event(code)[0]
    except KeyError:
        return code


def goldstein(code: str) -> float:
    """Goldstein value (-10 conflict .. +10 cooperation) of an event code; KeyError if unknown."""
    return float(_event(code)[1])


def actor_label(code: str) -> str:
    """Words for a composed CAMEO actor code: ``"USAGOV"`` -> ``"United States Government"``."""
    code = code.strip()
    chunks = [code[i : i + _CHUNK] for i in range(0, len(code), _CHUNK)]
    return " ".join(
        _chunk_label(chunk, _FIRST_CHUNK_TABLES if i == 0 else _LATER_CHUNK_TABLES)
        for i, chunk in enumerate(chunks)
    )


def _chunk_label(chunk: str, tables: tuple[str, ...]) -> str:
    for name in tables:
        found = _table(name).get(chunk)
        if found:
            return found[0]
    return chunk


def event_codes() -> list[str]:
    """Every CAMEO event code (root, base and leaf) in table order, leading zeros kept."""
    return list(_table("event_codes"))


def root_codes() -> list[str]:
    """The 20 two-digit CAMEO root codes, ``"01"`` .. ``"20"``."""
    return [code for code in event_codes() if len(code) == 2]
