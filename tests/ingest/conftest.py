"""Fixtures the ingest tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gdelt_http import FakeGdelt, serve_gdelt


@pytest.fixture
def gdelt() -> Iterator[FakeGdelt]:
    """A local GDELT 2.0 server on 127.0.0.1 (tests/ingest/gdelt_http.py)."""
    with serve_gdelt() as fake:
        yield fake
