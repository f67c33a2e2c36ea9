"""Which export rows ``geopol llm score`` scores: ``--tail``, ``--sample``, ``--exclude`` and
``--unseen``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_llm_commands import geopol, write_config

from services.llm.evaluate import sample_rows
from services.llm.score_cli import rows_to_score, trained_rows
from shared import score_table
from shared.embedding_export import gold_rows, load_export


def _table_of(rows: np.ndarray, export_path: Path, **meta: str) -> score_table.ScoreTable:
    """A score table of ``rows`` as ``geopol llm score`` writes one (scores do not matter)."""
    export = load_export(export_path)
    ids = np.asarray(export.arrays["candidate_ids"])[rows]
    zeros = np.zeros(ids.shape, np.float32)
    return score_table.ScoreTable(
        llm=zeros, graph=zeros, recurrency=zeros, candidate_ids=ids, rows=rows,
        gold=np.asarray(export.arrays["gold_index"])[rows],
        meta={"dataset": "TINY", "split": "valid", "protocol": "tgl-mcq",
              "export_id": export.export_id, **meta},
    )  # fmt: skip


def test_a_sample_leaves_out_the_rows_of_an_excluded_table(tiny_export: Path) -> None:
    export = load_export(tiny_export)
    # nothing excluded: the very sample ``geopol eval llm`` takes
    assert (rows_to_score(export, sample=50, seed=3) == sample_rows(export, 50, 3)).all()
    first = rows_to_score(export, sample=100, seed=0)
    second = rows_to_score(export, sample=100, seed=1, exclude=(_table_of(first, tiny_export),))
    assert len(second) == 100 and not set(second) & set(first)
    assert (second == np.sort(second)).all()
    # asking for more than is left gives what is left: every row but the excluded ones
    rest = rows_to_score(export, sample=10_000, seed=1, exclude=(_table_of(first, tiny_export),))
    assert set(rest) == set(range(len(export))) - set(first)
    # the tail: its last rows, less the excluded ones
    tail = rows_to_score(export, tail=12, exclude=(_table_of(first, tiny_export),))
    assert set(tail) == set(range(len(export) - 12, len(export))) - set(first)
    with pytest.raises(ValueError, match="must be positive"):
        rows_to_score(export, sample=0)


@pytest.fixture(scope="module")
def artifact(
    tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path, tiny_export: Path
) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("exclude")
    out = tmp / "artifact"
    config = write_config(tmp, tiny_backbone, out)
    done = geopol(
        "train", "llm", "--config", str(config), "--data", str(tiny_export), "--no-progress"
    )
    assert done.returncode == 0, done.stderr
    return config, out


def test_llm_score_exclude_writes_a_disjoint_sample_and_refuses_another_exports_table(
    artifact: tuple[Path, Path], tiny_export: Path, tmp_path: Path
) -> None:
    config, llm = artifact
    args = ["llm", "score", "--config", str(config), "--artifact", str(llm),
            "--data", str(tiny_export), "--no-progress"]  # fmt: skip
    first = tmp_path / "first.safetensors"
    done = geopol(*args, "--sample", "30", "--out", str(first))
    assert done.returncode == 0, done.stderr
    fitted = score_table.load(first)
    assert fitted.meta["export"] == str(tiny_export)
    assert fitted.meta["export_id"] == load_export(tiny_export).export_id

    second = tmp_path / "second.safetensors"
    done = geopol(*args, "--sample", "30", "--seed", "1", "--exclude", str(first),
                  "--out", str(second))  # fmt: skip
    assert done.returncode == 0, done.stderr
    held_out = score_table.load(second)
    assert len(held_out) == 30 and not set(held_out.rows) & set(fitted.rows)
    assert "1 table(s) left out" in done.stdout

    # a table of other rows than this export's is refused before any model is loaded
    stranger = score_table.save(
        _table_of(fitted.rows, tiny_export, export_id="f" * 64), tmp_path / "stranger.safetensors"
    )
    done = geopol(*args, "--sample", "30", "--exclude", str(stranger), "--out", str(second))
    assert done.returncode == 2 and "not scored from embedding export" in done.stderr


def test_unseen_leaves_out_every_row_the_artifact_trained_on(
    artifact: tuple[Path, Path], tiny_export: Path, tmp_path: Path
) -> None:
    config, llm = artifact
    manifest = json.loads((llm / "manifest.json").read_text())
    trained = set(manifest["data"]["rows"])
    assert len(trained) == manifest["data"]["questions"] > 0
    out = tmp_path / "unseen.safetensors"
    done = geopol("llm", "score", "--config", str(config), "--artifact", str(llm),
                  "--data", str(tiny_export), "--no-progress", "--unseen",
                  "--sample", "100000", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "trained rows left out" in done.stdout
    export = load_export(tiny_export)
    # every gold row the model never trained on, and none it did
    assert set(score_table.load(out).rows) == set(gold_rows(export)) - trained

    # an export of another split (or graph artifact) is refused, naming both values
    other = {**manifest, "data": {**manifest["data"], "split": "test"}}
    with pytest.raises(ValueError, match="split 'test', the export is of 'valid'"):
        trained_rows(other, export)
    old = {**manifest, "data": {k: v for k, v in manifest["data"].items() if k != "rows"}}
    with pytest.raises(ValueError, match="lists no training rows"):
        trained_rows(old, export)
