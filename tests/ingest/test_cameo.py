"""CAMEO labels from the tables shipped with the ingest package."""

from __future__ import annotations

import pytest

from services.ingest import cameo


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("USAGOV", "United States Government"),
        ("RUSMIL", "Russia Military"),
        ("IGOUNO", "Inter-Governmental Organization United Nations"),
        ("catSEP", "Catalan Separatist Rebels"),  # lower-case chunks are ethnic codes
        ("XYZGOV", "XYZ Government"),  # unknown chunk kept verbatim
        (" USA ", "United States"),
    ],
)
def test_actor_label(code: str, label: str) -> None:
    assert cameo.actor_label(code) == label


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("04", "CONSULT"),
        ("043", "Host a visit"),
        ("044", "Meet at a 'third' location"),
        ("19", "FIGHT"),
        ("190", "Use conventional military force, not specified below"),
        ("999", "999"),
    ],
)
def test_relation_label(code: str, label: str) -> None:
    assert cameo.relation_label(code) == label


def test_goldstein() -> None:
    assert cameo.goldstein("190") == -10.0
    assert cameo.goldstein("043") == 2.8
    assert cameo.goldstein("04") == 1.0
    with pytest.raises(KeyError, match="999"):
        cameo.goldstein("999")


def test_code_lists_keep_leading_zeros() -> None:
    roots = cameo.root_codes()
    assert roots == [f"{i:02d}" for i in range(1, 21)]
    codes = cameo.event_codes()
    assert len(codes) == 311
    assert {"010", "043", "0211", "1056", "106", "190"} <= set(codes)
    assert set(roots) <= set(codes)
