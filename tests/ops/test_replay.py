"""``geopol replay`` run as a user runs it: real GDELT-GEORGIA days through the tiny pipeline."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import tempfile
from datetime import date
from pathlib import Path

import pytest
import yaml
from tiny_pipeline import GEOPOL, REPO, clean_env, tiny_settings

from shared.replay import step_of

GEORGIA = Path("gdelt") / "v1" / "undp_georgia_bigquery_csv" / "june2011.csv"
LAST_DAY = 16  # 2011-06-01..16: twelve days of history, three forecast, one that closes the last


def _first_days(source: Path, out: Path) -> Path:
    """The rows of June 1-16 2011 of the real extract, lines as they are (R's quirks kept)."""
    lines = source.read_bytes().splitlines(keepends=True)
    days = {f"201106{d:02d}".encode() for d in range(1, LAST_DAY + 1)}
    out.mkdir()
    kept = [line for line in lines[1:] if any(b"," + d + b"," in line for d in days)]
    (out / "june2011.csv").write_bytes(lines[0] + b"".join(kept))
    return out


def test_replay_scores_each_day_beside_recurrency_and_resumes(
    tmp_path: Path, shared_data: Path, request: pytest.FixtureRequest
) -> None:
    data = _first_days(shared_data / GEORGIA, tmp_path / "data")
    # short: supervisord's socket path under RUN_DIR must fit a unix socket name (pytest-xdist
    # makes tmp_path long)
    run_dir = Path(tempfile.mkdtemp(prefix="gp-replay-"))
    request.addfinalizer(lambda: shutil.rmtree(run_dir, ignore_errors=True))
    config, _, _, _ = tiny_settings(tmp_path, run_dir, queries_per_step=6)
    config["ingest"]["dataset"] = "GEORGIA-TINY"
    config["ingest"]["source"] = str(run_dir / "replay" / "feed")
    config["ingest"]["mapping"].update(time_field="sqldate", step_minutes=1440)
    config["bootstrap"] = {"calibrate_questions": 500}  # every live test question
    path = tmp_path / "replay.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    reports = tmp_path / "reports" / "eval.json"
    command = [*GEOPOL, "replay", "--config", str(path), "--data", str(data), "--from",
               "2011-06-13", "--days", "3", "--window", "2", "--no-retrain", "--reports",
               str(reports), "--no-progress", "--day-timeout-s", "240"]  # fmt: skip

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO,
                              env=clean_env())  # fmt: skip

    done = run()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "12 history day(s) (2011-06-01..2011-06-12), 3 forecast day(s) from 2011-06-13" in (
        done.stdout
    )
    entry = json.loads(reports.read_text())["GEORGIA-TINY"]["online"]["no-retrain"]
    forecast_steps = [step_of(date(2011, 6, d)) for d in (13, 14, 15)]
    assert [s["step"] for s in entry["steps"]] == forecast_steps  # nothing of the past
    assert [(w["first_step"], w["last_step"]) for w in entry["windows"]] == [
        (forecast_steps[0], forecast_steps[1]),
        (forecast_steps[2], forecast_steps[2]),
    ]
    assert (entry["windows"][0]["first_date"], entry["windows"][1]["last_date"]) == (
        "2011-06-13",
        "2011-06-15",
    )
    overall = entry["overall"]
    assert overall["pipeline"]["n"] > 0 and overall["pipeline"]["n"] == overall["recurrency"]["n"]
    for name in ("pipeline", "recurrency"):
        assert 0.0 <= overall[name]["acc@1"] <= overall[name]["recall@K"] <= 1.0
        assert overall[name]["brier"] > 0.0
    assert (reports.parent / "online-GEORGIA-TINY-no-retrain.png").stat().st_size > 1000

    replay_config = run_dir / "replay" / "config.yaml"
    status = subprocess.run([*GEOPOL, "status", "--config", str(replay_config)], cwd=REPO,
                            capture_output=True, text=True, env=clean_env())  # fmt: skip
    assert "up" not in status.stdout.replace("not built", "").split("journal")[0].split(), (
        status.stdout
    )  # the replay took the pipeline down

    ledger = run_dir / "calibrate" / "GEORGIA-TINY" / "forecasts.sqlite"
    with sqlite3.connect(ledger) as db:
        published = db.execute("SELECT COUNT(*) FROM forecasts").fetchone()[0]
    again = run()  # resumed: every day is in the feed already, nothing is asked twice
    assert again.returncode == 0, again.stderr[-3000:]
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT COUNT(*) FROM forecasts").fetchone()[0] == published
    assert json.loads(reports.read_text())["GEORGIA-TINY"]["online"]["no-retrain"] == entry
