"""Fixtures shared by every test package.

The team's real data sets live beside the clone in ``../shared/data`` (CI has them there);
``GEOPOL_DATA_DIR`` points elsewhere. Tests that need them skip with a clear reason when absent,
so a user's machine without the team folder still runs the rest of the suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog

REPO_ROOT = Path(__file__).resolve().parents[1]


def team_data_dir() -> Path | None:
    """Where the team's real data sets are, or None when this machine has none."""
    env = os.environ.get("GEOPOL_DATA_DIR")
    candidate = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The team data folder (``../shared/data`` or ``$GEOPOL_DATA_DIR``); skips when absent."""
    found = team_data_dir()
    if found is None:
        pytest.skip("team data folder not found: set GEOPOL_DATA_DIR or clone beside ../shared")
    return found


@pytest.fixture(autouse=True)
def _reset_logging():
    """Undo a test's ``configure_logging``: its stream may be a capture closed after the test."""
    yield
    structlog.reset_defaults()
