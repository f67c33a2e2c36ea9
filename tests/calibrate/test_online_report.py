"""The online scorecard: resolved steps cut into windows, the pipeline beside the recurrency
yardstick, and ``geopol eval online`` run as a user runs it on a stage's ledger."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from stage_fixtures import hand_store, scores_message, stage_with

from services.calibrate.online import scorecards
from services.calibrate.resolution import rolling

REPO_ROOT = Path(__file__).resolve().parents[2]


def _card(step: int, hit: bool, baseline_hit: bool, unknown: int = 0) -> dict:
    """A resolved step of one forecast over two candidates (+ other), and its yardstick."""

    def one(right: bool) -> dict:
        return {
            "step": step, "void": 0, "unknown": 0, "forecasts": 1,
            "probabilities": [[0.7, 0.2, 0.1]], "truth": [0 if right else 1],
            "hit": [right], "in_candidates": [True], "truth_mae": [], "truth_kl": [],
        }  # fmt: skip

    card = one(hit) | {"unknown": unknown, "forecasts": 1 + unknown}
    return card | {"yardsticks": {"recurrency": one(baseline_hit)}}


def test_windows_score_the_pipeline_beside_its_yardstick_with_oov_per_step() -> None:
    cards = [_card(5, True, False), _card(3, False, True, unknown=1), _card(4, True, True)]
    report = scorecards(cards, 2, served_by={3: ["g0"], 4: ["g0"], 5: ["g1"]})
    first, second = report["windows"]
    assert (first["first_step"], first["last_step"], second["first_step"]) == (3, 4, 5)
    assert first["pipeline"]["acc@1"] == 0.5 and first["recurrency"]["acc@1"] == 1.0
    assert second["pipeline"]["acc@1"] == 1.0 and second["recurrency"]["acc@1"] == 0.0
    assert first["graph_artifacts"] == ["g0"] and second["graph_artifacts"] == ["g1"]
    ordered = sorted(cards, key=lambda c: c["step"])
    assert report["overall"]["pipeline"]["brier"] == pytest.approx(rolling(ordered)["brier"])
    assert [s["oov_rate"] for s in report["steps"]] == [0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="window"):
        scorecards(cards, 0)


def test_eval_online_reports_a_stages_resolved_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = tmp_path / "online.yaml"
    settings = yaml.safe_load((REPO_ROOT / "configs" / "default.yaml").read_text())
    settings["paths"]["run_dir"] = str(run_dir)
    settings["ingest"]["dataset"] = "HAND"
    config.write_text(yaml.safe_dump(settings))
    reports = tmp_path / "reports" / "eval.json"

    def eval_online(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", "eval", "online", "--config", str(config),
             "--reports", str(reports), *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    missing = eval_online()
    assert missing.returncode == 2 and "no forecast ledger" in missing.stderr

    folder = run_dir / "calibrate" / "HAND"
    folder.mkdir(parents=True)
    store = hand_store(tmp_path)
    a, b, c = (int(i) for i in store.entities.ids(["A", "B", "C"]))
    meet = int(store.relations.ids(["meet"])[0])
    stage = stage_with(folder, [], store, k=3, yardsticks=("recurrency",))
    for step in (1, 2, 3):  # A meets B at 2 (and 0), C at 3; the LLM says B, recurrency C
        stage.handle(
            "scores",
            scores_message(a, meet, step, [b, c, 99], llm=np.array([3.0, 0.0, -1.0]),
                           recurrency=np.array([0.0, 3.0, -1.0]), dataset="HAND"),
        )  # fmt: skip
    assert len(stage.resolve_final_steps()) == 3  # step 1 is void: A met nobody then
    stage.ledger.close()

    done = eval_online("--window", "2", "--label", "hand")
    assert done.returncode == 0, done.stderr
    entry = json.loads(reports.read_text())["HAND"]["online"]["hand"]
    assert [(w["first_step"], w["last_step"]) for w in entry["windows"]] == [(1, 2), (3, 3)]
    overall = entry["overall"]
    assert overall["pipeline"]["n"] == 2 and overall["recurrency"]["n"] == 2
    assert overall["pipeline"]["acc@1"] == 0.5 and overall["recurrency"]["acc@1"] == 0.5
    assert entry["windows"][1]["recurrency"]["acc@1"] == 1.0  # C at step 3
    assert entry["windows"][0]["graph_artifacts"] == ["g" * 64]
    assert entry["windows"][0]["first_date"] == "2026-01-02"  # the date the forecasts name
    assert entry["steps"][0]["date"] == "2026-01-02"
    assert (reports.parent / "online-HAND-hand.png").stat().st_size > 1000
    markdown = (reports.parent / "eval.md").read_text()
    assert "## HAND: online scorecard, hand (windows of 2 steps)" in markdown
    assert "pipeline Acc@1" in markdown and "recurrency Acc@1" in markdown
    assert "pipeline: acc@1 0.5000" in done.stdout
