"""`geopol eval --data DIR` on a folder it has never seen: baselines + RE-GCN into eval.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ENTITIES, RELATIONS = 12, 3


def write_toy(root: Path) -> int:
    """A periodic TKG in RE-Net layout; returns the number of test facts."""
    root.mkdir(parents=True)
    rows = np.array(
        [
            (s, s % RELATIONS, (s + t) % ENTITIES if s % 2 else (3 * s) % ENTITIES, t)
            for t in range(30)
            for s in range(ENTITIES)
        ]
    )
    bounds = {"train": (0, 20), "valid": (20, 25), "test": (25, 30)}
    for split, (lo, hi) in bounds.items():
        part = rows[(rows[:, 3] >= lo) & (rows[:, 3] < hi)]
        np.savetxt(root / f"{split}.txt", part, fmt="%d", delimiter="\t")
    (root / "entity2id.txt").write_text("".join(f"e{i}\t{i}\n" for i in range(ENTITIES)))
    (root / "relation2id.txt").write_text("".join(f"r{i}\t{i}\n" for i in range(RELATIONS)))
    return int((rows[:, 3] >= 25).sum())


def geopol_eval(*args: str) -> subprocess.CompletedProcess[str]:
    # a fresh process: jax_env must configure XLA before jax is first imported
    code = "import sys; from shared.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "eval", *args], capture_output=True, text=True, timeout=300
    )


def test_eval_trains_then_reuses_and_reports_every_method(tmp_path):
    n_test = write_toy(tmp_path / "TOY")
    common = [
        "--data",
        str(tmp_path / "TOY"),
        "--artifact",
        str(tmp_path / "art"),
        "--reports",
        str(tmp_path / "rep"),
        "--no-progress",
    ]
    first = geopol_eval(*common, "--epochs", "2", "--patience", "1")
    assert first.returncode == 0, first.stderr
    ranking = json.loads((tmp_path / "rep" / "eval.json").read_text())["TOY"]["ranking"]
    for method in ("frequency", "recurrency", "recurrency-strict", "regcn"):
        assert ranking[method]["filter"] == "time-aware"
        assert ranking[f"{method}@raw"]["filter"] == "raw"
        assert ranking[method]["n_queries"] == 2 * n_test  # object + inverse queries
        assert ranking[method]["mrr"] >= ranking[f"{method}@raw"]["mrr"]
    assert ranking["regcn"]["mrr"] > 3 / ENTITIES  # learnt the periodic structure
    second = geopol_eval(*common)
    assert second.returncode == 0, second.stderr
    assert "reusing RE-GCN artifact" in second.stdout
    again = json.loads((tmp_path / "rep" / "eval.json").read_text())["TOY"]["ranking"]
    assert again["regcn"] == ranking["regcn"]
    assert (tmp_path / "rep" / "eval.md").read_text().count("geopol eval") >= 1


def test_eval_names_a_missing_folder(tmp_path):
    result = geopol_eval("--data", str(tmp_path / "absent"), "--baselines-only")
    assert result.returncode == 2 and "absent" in result.stderr


def test_graph_bench_writes_its_section(tmp_path):
    write_toy(tmp_path / "TOY")
    code = "import sys; from shared.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "bench",
            "graph",
            "--data",
            str(tmp_path / "TOY"),
            "--reports",
            str(tmp_path / "rep"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    section = json.loads((tmp_path / "rep" / "bench.json").read_text())["graph"]
    assert section["dataset"] == "TOY" and section["epoch_s"] > 0
    assert 1 <= section["jit_compiles"] <= 10 and section["peak_rss_mb"] > 50
    assert "geopol bench graph" in (tmp_path / "rep" / "bench.md").read_text()
