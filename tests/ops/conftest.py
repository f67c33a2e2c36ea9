"""The tiny real pipeline of tests/ops/tiny_pipeline.py, built once per session by the real
``geopol pipeline bootstrap`` (about a minute on two cores)."""

from __future__ import annotations

import pytest
from tiny_pipeline import TinyPipeline, write_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_built(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyPipeline, str]:
    """The pipeline with every artifact bootstrapped, and what the bootstrap printed."""
    pipe = write_tiny_pipeline(tmp_path_factory.mktemp("tiny-pipeline"))
    done = pipe.geopol("pipeline", "bootstrap", timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return pipe, done.stdout
