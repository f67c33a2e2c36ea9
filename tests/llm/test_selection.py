"""Training-question selections: the size asked, no repeats, the pool's rules, and the commands
that use them run as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_llm_commands import write_config

from services.llm.selection import (
    SELECTIONS,
    SelectionError,
    coverage_bins,
    influence_selection,
    loss_band_selection,
    pool_of,
)
from shared import influence_scores
from shared.embedding_export import load_export

REPO_ROOT = Path(__file__).resolve().parents[2]


def _scored(export_dir: Path, seed: int = 0) -> tuple:
    """Skewed influence scores (most rows in a few bins, a long right tail) and losses."""
    export = load_export(export_dir)
    rng = np.random.default_rng(seed)
    influence = rng.lognormal(0.0, 1.0, size=len(export)).astype(np.float32)
    loss = rng.gamma(2.0, 1.0, size=len(export)).astype(np.float32)
    scores = influence_scores.InfluenceScores({}, influence, loss)
    return export, scores


@pytest.mark.parametrize("name", sorted(SELECTIONS))
def test_each_selection_gives_the_size_asked_without_repeats_or_excluded_rows(
    tiny_export: Path, name: str
) -> None:
    export, scores = _scored(tiny_export)
    exclude = np.arange(200, len(export))  # the validation tail
    pool = pool_of(export, exclude, scores)
    rows = SELECTIONS[name](pool, 60, 3)
    assert len(rows) == 60 and len(set(rows.tolist())) == 60
    assert not set(rows.tolist()) & set(exclude.tolist())
    assert np.array_equal(rows, SELECTIONS[name](pool, 60, 3))  # seeded
    with pytest.raises(SelectionError, match="offers"):
        SELECTIONS[name](pool, 500, 3)


def test_influence_drops_the_top_and_covers_every_non_empty_bin(tiny_export: Path) -> None:
    export = load_export(tiny_export)
    n = len(export)  # 240: 72 outliers on top (the 30 % pruned), 3 rows alone in the top bin
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.uniform(0.0, 1.0, n - 75), [5.0] * 3, rng.uniform(10, 20, 72)])
    influence = rng.permutation(values).astype(np.float32)
    scores = influence_scores.InfluenceScores({}, influence, np.ones(n, np.float32))
    pool = pool_of(export, np.array([], dtype=np.int64), scores)
    rows = influence_selection(pool, 80, 0, hard_prune=0.3, bins=10)
    assert len(set(rows.tolist())) == 80 and influence[rows].max() < 10  # no outlier kept
    bins = coverage_bins(influence[rows], 10)
    assert set(bins.tolist()) == {0, 1, 9}  # every non-empty bin of the kept range
    assert np.count_nonzero(influence[rows] == 5.0) == 3  # the small bin gives all it has
    assert abs(int((bins == 0).sum()) - int((bins == 1).sum())) <= 1  # the rest split evenly


def test_loss_band_keeps_the_middle_half(tiny_export: Path) -> None:
    export, scores = _scored(tiny_export, seed=2)
    rows = loss_band_selection(pool_of(export, np.array([], dtype=np.int64), scores), 50, 0)
    low, high = np.percentile(scores.loss, [25, 75])
    assert np.all((scores.loss[rows] >= low) & (scores.loss[rows] <= high))


def test_a_selection_without_scores_says_how_to_make_them(tiny_export: Path) -> None:
    export = load_export(tiny_export)
    with pytest.raises(SelectionError, match="geopol export influence"):
        influence_selection(pool_of(export, np.array([], dtype=np.int64)), 10, 0)


def test_llm_select_shows_and_train_llm_trains_on_the_influence_selection(
    tmp_path: Path, tiny_backbone: Path, tiny_export: Path
) -> None:
    data = tmp_path / "valid"
    shutil.copytree(tiny_export, data)
    export, scores = _scored(data, seed=3)
    influence_scores.save(data.with_name("valid-influence"), scores.influence, scores.loss,
                          influence_scores.of_export(export))  # fmt: skip
    artifact = tmp_path / "artifact"
    config = write_config(tmp_path, tiny_backbone, artifact)

    def geopol(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shared.cli", *args, "--config", str(config),
                               "--data", str(data)], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    shown = geopol("llm", "select", "--selection", "influence", "--show", "3")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("influence: 32 of ") and "bins covered" in lines[1]
    assert len([line for line in lines if line.strip().startswith("row ")]) == 3
    values = [float(line.split("influence ")[1].split()[0]) for line in lines[2:5]]
    assert values == sorted(values, reverse=True)

    done = geopol(
        "train", "llm", "--selection", "influence", "--stage2-questions", "8", "--no-progress"
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((artifact / "manifest.json").read_text())
    trained = manifest["data"]["rows"]
    assert manifest["data"]["selection"] == "influence" and len(trained) == 40
    assert [s["questions"] for s in manifest["data"]["stages"]] == [32, 8]

    (data.with_name("valid-influence") / "manifest.json").unlink()
    missing = geopol("llm", "select", "--selection", "loss-band")
    assert missing.returncode == 2 and "valid-influence" in missing.stderr


def test_stage_two_follows_stage_one_disjoint_and_is_recorded(
    tmp_path: Path, tiny_export: Path
) -> None:
    from services.llm.selection import select
    from shared.config import LlmTrainConfig

    export, scores = _scored(tiny_export, seed=5)
    settings = LlmTrainConfig(data=str(tiny_export), questions=40, stage2_questions=30, seed=2)
    exclude = np.arange(230, len(export))
    rows, _, stages = select(settings, export, exclude)
    first, second = rows[:40], rows[40:]
    assert len(second) == 30 and not set(first.tolist()) & set(second.tolist())
    assert not set(rows.tolist()) & set(exclude.tolist())
    assert [(s["stage"], s["questions"]) for s in stages] == [(1, 40), (2, 30)]
    assert np.array_equal(first, select(settings.model_copy(update={"stage2_questions": 0}),
                                        export, exclude)[0])  # fmt: skip
    with pytest.raises(SelectionError, match="stage 2"):
        select(settings.model_copy(update={"stage2_questions": 200}), export, exclude)
