"""``geopol train calibrate`` and ``geopol eval calibrate`` run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic import table_with_temperature, with_misses

from services.calibrate import artifact
from shared import score_table

REPO_ROOT = Path(__file__).resolve().parents[2]


def geopol(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _tables(tmp_path: Path) -> dict[str, Path]:
    """Overconfident LLM logits (true temperature 2.5) in both protocols, valid and test."""
    out = {}
    for split, seed in (("valid", 0), ("test", 1)):
        mcq, _ = table_with_temperature(1500, 10, temperature=2.5, seed=seed)
        top = np.sort(mcq.graph, axis=1)[:, -1]
        live = with_misses(mcq, 1.0 / (1.0 + np.exp(top - np.median(top))), seed=seed + 10)
        for protocol, table in (("tgl-mcq", mcq), ("live", live)):
            table.meta.update(split=split, llm_artifact="a" * 64, graph_artifact="g" * 64)
            out[f"{split}-{protocol}"] = score_table.save(
                table, tmp_path / f"{split}-{protocol}.safetensors"
            )
    return out


def test_train_then_eval_calibrate_write_the_calibration_rows(tmp_path: Path) -> None:
    tables = _tables(tmp_path)
    out = tmp_path / "calibrator"
    config = ["--config", str(REPO_ROOT / "configs" / "default.yaml")]
    done = geopol(
        "train", "calibrate", *config, "--table", str(tables["valid-tgl-mcq"]),
        "--table", str(tables["valid-live"]), "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tgl-mcq K=10: chose" in done.stdout and "misses (other fitted)" in done.stdout
    saved = artifact.load(out)
    assert set(saved.protocols) == {"tgl-mcq", "live"} and saved.protocol("live").other
    baseline = saved.protocol("live").yardsticks["recurrency"]  # forecast beside the chosen one
    assert baseline.other is not None and set(baseline.calibrators) == {"temperature", "isotonic"}

    report = tmp_path / "reports" / "eval.json"
    done = geopol(
        "eval", "calibrate", *config, "--artifact", str(out),
        "--valid", str(tables["valid-tgl-mcq"]), "--valid", str(tables["valid-live"]),
        "--test", str(tables["test-tgl-mcq"]), "--test", str(tables["test-live"]),
        "--reports", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(report.read_text())["SYNTH"]
    for protocol in ("tgl-mcq", "live"):
        entry = rows["calibration"][protocol]
        assert entry["n"] == 1500 and entry["ece_after"] < 0.04 < entry["ece_before"]
        assert 0 < entry["ece_floor"] < entry["ece_floor_p95"]
        assert entry["nll_after"] < entry["nll_before"]
        assert {"temperature", "isotonic", "stack", "recurrency+temperature"} <= set(
            entry["by_method"]
        )
        # random recurrency scores carry nothing: the LLM's calibrated Brier beats them
        assert entry["brier_after"] < entry["by_method"]["recurrency+temperature"]["brier"]
        assert (tmp_path / "reports" / f"reliability-SYNTH-{protocol}.png").stat().st_size > 0
    live_row = rows["live"][f"synthetic+{rows['calibration']['live']['method']}"]
    assert 0 < live_row["recall@K"] < 1 and "brier" in live_row
    # Hits@1 of the calibrated forecast's own pick: at most recall, and here the synthetic llm
    # column is informative, so the pick is right more often than by chance
    assert 0.1 * live_row["recall@K"] < live_row["hits@1"] <= live_row["recall@K"]
    assert "calibration, live" in (tmp_path / "reports" / "eval.md").read_text()


def test_eval_calibrate_refuses_validation_tables_it_was_not_fitted_on(tmp_path: Path) -> None:
    tables = _tables(tmp_path)
    out = tmp_path / "calibrator"
    config = ["--config", str(REPO_ROOT / "configs" / "default.yaml")]
    assert geopol("train", "calibrate", *config, "--table", str(tables["valid-live"]),
                  "--out", str(out)).returncode == 0  # fmt: skip
    done = geopol(
        "eval", "calibrate", *config, "--artifact", str(out),
        "--valid", str(tables["test-live"]), "--test", str(tables["test-live"]),
    )  # fmt: skip
    assert done.returncode == 2 and "sha256 differs" in done.stderr
    done = geopol("eval", "calibrate", *config, "--artifact", str(out),
                  "--test", str(tables["test-tgl-mcq"]))  # fmt: skip
    assert done.returncode == 2 and "no 'tgl-mcq' calibration" in done.stderr


@pytest.mark.parametrize("damage", ["hash", "missing"])
def test_a_damaged_calibrator_is_refused_naming_the_file(tmp_path: Path, damage: str) -> None:
    tables = _tables(tmp_path)
    out = tmp_path / "calibrator"
    config = ["--config", str(REPO_ROOT / "configs" / "default.yaml")]
    assert geopol("train", "calibrate", *config, "--table", str(tables["valid-live"]),
                  "--out", str(out)).returncode == 0  # fmt: skip
    params = out / artifact.PARAMS
    if damage == "hash":
        params.write_text(params.read_text().replace('"chosen"', '"chosen" ', 1))
    else:
        params.unlink()
    with pytest.raises(artifact.CalibratorArtifactError, match="calibration.json"):
        artifact.load(out)
