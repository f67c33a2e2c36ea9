"""Fixtures shared by every test package.

The team's real data sets live beside the clone in ``../shared/data`` (CI has them there);
``GEOPOL_DATA_DIR`` points elsewhere. Tests that need them skip with a clear reason when absent,
so a user's machine without the team folder still runs the rest of the suite.

Hypothesis runs under a profile picked by ``HYPOTHESIS_PROFILE``: ``bounded`` (the default, what
``make test`` and CI run: 300 examples per property, seconds per test) or ``fuzz`` (``make fuzz``:
20,000, tens of minutes); a test whose examples are slow takes a share of the count. Both replay
and extend the kept corpus in ``tests/fuzz_corpus`` (see ``KeptCorpus``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

REPO_ROOT = Path(__file__).resolve().parents[1]
FUZZ_CORPUS = REPO_ROOT / "tests" / "fuzz_corpus"

# XLA's compiled programs, kept on disk for every test process and the processes tests start:
# the suite trains and serves the same tiny RE-GCN shapes in dozens of processes, and compiling
# them anew in each process cost a sixth of its run time (15:20 -> 12:45 on two cores). Set
# before any test imports jax; the cache is keyed by the program and the jaxlib version, so it
# never serves a stale build.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(REPO_ROOT / ".pytest_cache" / "jax-compilation")
)


class KeptCorpus(DirectoryBasedExampleDatabase):
    """Hypothesis's example database, committed: every failing example lands here and every later
    run replays it first, so a crash found once (by ``make fuzz``, CI or a laptop) is tried forever.

    Unlike the plain directory database it never deletes a failure: Hypothesis drops an entry
    that no longer fails, which is exactly the fixed crash the corpus is kept for. It keeps one
    entry per failure, the shrunk one: the larger examples met while shrinking (Hypothesis's
    ``.secondary`` and ``.pareto`` side keys) are not written. A new file here after a run is a
    failure to commit, with its ``@example`` in the test: entries are keyed by the test's source
    and in Hypothesis's own format, so an edited test or a new Hypothesis may stop replaying them;
    the ``@example`` regression cases are the durable record.
    """

    _SIDE_KEYS = (b".secondary", b".pareto")

    def __repr__(self) -> str:
        return f"KeptCorpus({self.path})"

    def save(self, key: bytes, value: bytes) -> None:
        if not key.endswith(self._SIDE_KEYS):
            super().save(key, value)

    def delete(self, key: bytes, value: bytes) -> None:
        """Never: a fixed crash stays in the corpus as a regression case."""

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        """Shrinking found a smaller failure: the larger one leaves (side keys are not kept)."""
        if dest.endswith(self._SIDE_KEYS):
            super().delete(src, value)
        else:
            super().move(src, dest, value)


_PROFILE = {
    "database": KeptCorpus(FUZZ_CORPUS),
    "suppress_health_check": [HealthCheck.too_slow],
    "deadline": 5000,  # ms per example: catches a hang or a quadratic path, not a busy machine
}
settings.register_profile("bounded", max_examples=300, **_PROFILE)
settings.register_profile("fuzz", max_examples=20_000, print_blob=True, **_PROFILE)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bounded"))


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
