"""``geopol eval calibrate --truth``: each test question against the simulated world's exact
distribution, on a hand-made world small enough to check the MAE and KL by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from synthetic import table_with_temperature, with_misses

from services.calibrate import artifact
from services.calibrate.fit import fit_protocol
from services.calibrate.resolution import against_truth
from services.calibrate.truth_rows import (
    INVERSE,
    NO_FILE,
    NOT_ASKED,
    TruthError,
    row_truth,
    store_keys,
    table_export,
)
from shared import score_table
from shared.embedding_export import QUERY_COLUMNS, write_small_export
from shared.sim_truth import TRUTH_SCHEMA, truth_file

REPO_ROOT = Path(__file__).resolve().parents[2]
KEYS = ["USA", "CHN", "RUS", "IRN", "PAK"]
LABELS = ["United States", "China", "Russia", "Iran", "Pakistan"]
ROOTS = ["04", "05"]
SLOT = datetime(2024, 1, 1, 0, 15, tzinfo=UTC)
T = int(SLOT.timestamp()) // 900  # the store step of that slot (15-minute steps from 1970)
LLM_ARTIFACT = "a" * 64

# the five test questions: (subject, relation, step, candidates); relation 2 is 04's inverse
QUESTIONS = [
    (0, 0, T, [1, 2, 3]),  # the world: CHN .6, RUS .2, IRN .2 — all among the candidates
    (0, 0, T + 1, [1, 2, 3]),  # no truth file for that slot
    (1, 0, T, [0, 2, 3]),  # CHN/04 is not in the slot's truth
    (0, 2, T, [1, 2, 3]),  # an inverse query: the world says nothing of it
    (0, 1, T, [1, 4, 3]),  # the world: CHN .5, RUS .5 — RUS is not a candidate
]
BEFORE = np.array([0.5, 0.3, 0.2])  # every question's raw softmax; ``other`` 0


def _kl(q: list[float], p: list[float]) -> float:
    return sum(qi * np.log(qi / max(pi, 1e-12)) for qi, pi in zip(q, p, strict=True) if qi > 0)


# by hand: [.5 .3 .2 | 0] against [.6 .2 .2 | 0] and against [.5 0 0 | .5]
MAE = ((0.1 + 0.1 + 0 + 0) / 4 + (0 + 0.3 + 0.2 + 0.5) / 4) / 2
KL = (_kl([0.6, 0.2, 0.2], [0.5, 0.3, 0.2]) + _kl([0.5, 0.5], [0.5, 0.0])) / 2


def write_world(tmp_path: Path) -> dict[str, Path]:
    """A SIM dataset folder, an export of its test questions, the simulator's truth of one slot,
    a score table of those questions and a live calibrator fitted at the same K."""
    data = tmp_path / "datasets" / "SIM"
    data.mkdir(parents=True)
    for name, rows in (("entity", KEYS), ("relation", ROOTS)):
        (data / f"{name}2id.txt").write_text("".join(f"{k}\t{i}\n" for i, k in enumerate(rows)))
    (data / "entity2label.txt").write_text("".join(f"{k}\t{i}\n" for i, k in enumerate(LABELS)))
    for split, step in (("train", T - 2), ("valid", T - 1), ("test", T)):
        (data / f"{split}.txt").write_text(f"0\t0\t1\t{step}\n")

    n, k = len(QUESTIONS), 3
    queries = np.array([(s, r, c[0], t) for s, r, t, c in QUESTIONS], np.int64)
    export = tmp_path / "embeddings" / "SIM" / "test-live"
    rng = np.random.default_rng(0)
    write_small_export(
        export,
        {
            "subject": rng.normal(size=(n, 1, 2)).astype(np.float32),
            "relation": rng.normal(size=(n, 2)).astype(np.float32),
            "candidates": rng.normal(size=(n, k, 1, 2)).astype(np.float32),
            "scores": np.tile([2.0, 1.0, 0.0], (n, 1)).astype(np.float32),
            "query": rng.normal(size=(n, 2)).astype(np.float32),
            "recurrency": np.zeros((n, k), np.float32),
            "candidate_ids": np.array([c for *_, c in QUESTIONS], np.int64),
            "gold_index": np.zeros(n, np.int64),
            "queries": queries,
        },
        {
            "protocol": "live",
            "num_candidates": k,
            "steps": 1,
            "dim": 2,
            "graph_artifact": "g" * 64,
            "dataset": "SIM",
            "split": "test",
            "query_columns": list(QUERY_COLUMNS),
            "entity_names": LABELS,
            "relation_names": ROOTS,  # no relation2label.txt: the names as they are
            "calendar": {"origin_utc": "1970-01-01T00:00:00+00:00", "step_seconds": 900},
        },
    )

    sim = tmp_path / "simulate"
    path = truth_file(sim, SLOT)
    path.parent.mkdir(parents=True)
    pl.DataFrame(
        {"t": [1] * 5, "subject": ["USA"] * 5, "relation": ["04"] * 3 + ["05"] * 2,
         "object": ["CHN", "RUS", "IRN", "CHN", "RUS"], "prob": [0.6, 0.2, 0.2, 0.5, 0.5]},
        schema=TRUTH_SCHEMA,
    ).write_parquet(path)  # fmt: skip

    logits = np.tile(np.log(BEFORE), (n, 1)).astype(np.float32)
    table = score_table.ScoreTable(
        llm=logits,
        graph=np.tile([2.0, 1.0, 0.0], (n, 1)).astype(np.float32),
        recurrency=np.zeros((n, k), np.float32),
        candidate_ids=np.array([c for *_, c in QUESTIONS], np.int64),
        rows=np.arange(n),
        gold=np.zeros(n, np.int64),
        meta={"dataset": "SIM", "split": "test", "protocol": "live", "graph_artifact": "g" * 64,
              "method": "tgl-llm", "llm_artifact": LLM_ARTIFACT, "K": k, "export": str(export)},
    )  # fmt: skip
    test = score_table.save(table, tmp_path / "scores" / "test-live-K3.safetensors")

    fitted, _ = table_with_temperature(400, k, temperature=2.0, seed=3)
    valid_table = with_misses(fitted, np.full(len(fitted), 0.3))
    valid_table.meta.update(llm_artifact=LLM_ARTIFACT, graph_artifact="g" * 64, dataset="SIM")
    valid = score_table.save(valid_table, tmp_path / "scores" / "valid-live-K3.safetensors")
    calibrator = tmp_path / "calibrator"
    artifact.save(calibrator, {"live": fit_protocol(valid_table)}, {"live": valid})
    return {"data": data, "export": export, "truth": sim, "test": test, "valid": valid,
            "calibrator": calibrator}  # fmt: skip


def test_against_truth_by_hand() -> None:
    p = np.array([[0.5, 0.3, 0.2, 0.0], [0.5, 0.3, 0.1, 0.1]])
    q = np.array([[0.6, 0.2, 0.2], [0.5, 0.0, 0.0]])
    mae, kl = against_truth(p, q)
    assert mae == pytest.approx([0.05, (0 + 0.3 + 0.1 + 0.4) / 4])
    assert kl == pytest.approx([_kl([0.6, 0.2, 0.2], [0.5, 0.3, 0.2]), 0.5 * np.log(0.5 / 0.1)])
    with pytest.raises(ValueError, match=r"\[n, K\+1\] and \[n, K\]"):
        against_truth(p, q[:, :2])


def test_each_row_gets_the_worlds_probability_of_its_candidates(tmp_path: Path) -> None:
    world = write_world(tmp_path)
    table = score_table.load(world["test"])
    export = table_export(table, "test", None)
    truth = row_truth(table, export, store_keys(world["data"], export), world["truth"])
    assert truth.known.tolist() == [True, False, False, False, True]
    assert truth.true[0] == pytest.approx([0.6, 0.2, 0.2])
    assert truth.true[4] == pytest.approx([0.5, 0.0, 0.0])  # RUS's 0.5 is ``other``
    assert truth.missing == {NO_FILE: 1, NOT_ASKED: 1, INVERSE: 1}

    # a folder without the slot's file answers nothing: an error that names it
    with pytest.raises(TruthError, match=f"{tmp_path / 'elsewhere'}: no truth/ file"):
        row_truth(table, export, store_keys(world["data"], export), tmp_path / "elsewhere")
    # ids are the dataset folder's only when its names are the export's
    (world["data"] / "entity2label.txt").write_text("Somewhere\t0\n" + "X\t1\nY\t2\nZ\t3\nW\t4\n")
    with pytest.raises(TruthError, match="names are not those of embedding export"):
        store_keys(world["data"], export)


def test_a_table_is_looked_up_only_in_its_own_export(tmp_path: Path) -> None:
    world = write_world(tmp_path)
    table = score_table.load(world["test"])
    old = score_table.ScoreTable(
        **{name: getattr(table, name) for name in score_table._ARRAYS},
        meta={k: v for k, v in table.meta.items() if k != "export"},
    )
    with pytest.raises(TruthError, match="pass --export DIR"):
        table_export(old, "old.safetensors", None)
    assert table_export(old, "old.safetensors", world["export"]).directory == world["export"]
    other = score_table.ScoreTable(
        **{name: getattr(table, name) for name in score_table._ARRAYS},
        meta={**table.meta, "split": "valid"},
    )
    with pytest.raises(score_table.ScoreTableError, match="split 'valid'"):
        table_export(other, "valid.safetensors", None)
    moved = score_table.ScoreTable(
        **{name: getattr(table, name) for name in score_table._ARRAYS if name != "candidate_ids"},
        candidate_ids=np.where(table.candidate_ids == 3, 4, table.candidate_ids),
        meta=table.meta,
    )
    with pytest.raises(score_table.ScoreTableError, match="candidates of row 0"):
        table_export(moved, "moved.safetensors", None)


def geopol(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_eval_calibrate_truth_writes_the_distance_to_the_world_beside_the_ece(
    tmp_path: Path,
) -> None:
    world = write_world(tmp_path)
    report = tmp_path / "reports" / "eval.json"
    args = [
        "eval", "calibrate", "--config", str(REPO_ROOT / "configs" / "default.yaml"),
        "--artifact", str(world["calibrator"]), "--valid", str(world["valid"]),
        "--test", str(world["test"]), "--reports", str(report), "--data", str(world["data"]),
    ]  # fmt: skip
    done = geopol(*args, "--truth", str(world["truth"]))
    assert done.returncode == 0, done.stderr
    entry = json.loads(report.read_text())["SIM"]["calibration"]["live"]
    assert entry["truth_n"] == 2 and entry["truth_missing"] == 3 and entry["n"] == 5
    assert entry["truth_mae_before"] == pytest.approx(MAE, abs=1e-6)
    assert entry["truth_kl_before"] == pytest.approx(KL, rel=1e-5)
    # after: the chosen calibrator's own forecast of the same two questions, through the same math
    fit = artifact.load(world["calibrator"]).protocol("live")
    table = score_table.load(world["test"])
    forecast = fit.forecast(table.features())[[0, 4]]
    mae, kl = against_truth(forecast, np.array([[0.6, 0.2, 0.2], [0.5, 0.0, 0.0]]))
    assert entry["truth_mae_after"] == pytest.approx(mae.mean())
    assert entry["truth_kl_after"] == pytest.approx(kl.mean())
    # a calibrated forecast gives ``other`` mass: far closer to the world than the raw softmax
    assert entry["truth_kl_after"] < entry["truth_kl_before"]
    for name in ("temperature", "isotonic", "stack", "graph+temperature"):
        assert {"truth_mae", "truth_kl", "ece"} <= set(entry["by_method"][name])
    assert entry["by_method"][entry["method"]]["truth_mae"] == entry["truth_mae_after"]
    assert "vs the simulator's truth: MAE" in done.stdout and "3 without a truth" in done.stdout
    assert "1 inverse relation" in done.stdout
    markdown = (tmp_path / "reports" / "eval.md").read_text()
    assert "| truth MAE | truth KL |" in markdown and "on the 2 questions that have one" in markdown

    # no truth files for any question: exit 2, naming the folder
    done = geopol(*args, "--truth", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and f"{tmp_path / 'nowhere'}: no truth/ file" in done.stderr
