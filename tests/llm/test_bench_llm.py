"""``geopol bench llm`` runs as a user runs it, on the tiny backbone, and writes its section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "backbone",
    "dtype",
    "questions",
    "prompt_tokens",
    "tokens_per_s",
    "hf_forward_tokens_per_s",
    "ratio",
    "fraction_of_matmul",
    "train_samples_per_s",
    "hf_train_samples_per_s",
    "peak_rss_mb",
}


def test_bench_llm_writes_its_section(tmp_path: Path, tiny_backbone: Path) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({"name": "bench-test", "llm": {"dtype": "float32"}}))
    reports = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "bench", "llm", "--backbone", str(tiny_backbone),
         "--config", str(config), "--questions", "8", "--batch", "4", "--repeats", "1",
         "--reports", str(reports)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    bench = json.loads((reports / "bench.json").read_text())
    llm = bench["llm"]
    assert set(llm) == KEYS
    assert llm["backbone"] == tiny_backbone.name and llm["dtype"] == "float32"
    assert llm["questions"] == 8
    for key in KEYS - {"backbone", "dtype"}:
        assert isinstance(llm[key], int | float) and llm[key] > 0, key
    assert llm["ratio"] == pytest.approx(
        llm["tokens_per_s"] / llm["hf_forward_tokens_per_s"], rel=2e-3
    )
    assert "machine" in bench
    assert "geopol bench llm" in (reports / "bench.md").read_text()
