"""Fixtures of the LLM tests: a tiny random Llama backbone and a hand-made export (tiny_llm)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_llm import write_export, write_tiny_backbone


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_export(tmp_path_factory.mktemp("export") / "valid")
