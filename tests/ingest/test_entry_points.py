"""``geopol simulate`` and ``geopol dataset`` as a user runs them: outputs under the run
directory (``GEOPOL_RUN_DIR`` moves them), the config's data folder and logging settings, logs on
stderr and only the summary on stdout, and a help that lists every dataset command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_datasets import v1_line

from services.ingest.datasets import GEORGIA_SOURCE

CLI = "import sys; from shared.cli import main; sys.exit(main(sys.argv[1:]))"


def geopol(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``geopol ARGS`` in a fresh process started in ``cwd`` (not the clone), with ``env`` set
    and neither GEOPOL_RUN_DIR nor GEOPOL_DATA_DIR inherited."""
    clean = {k: v for k, v in os.environ.items() if k not in {"GEOPOL_RUN_DIR", "GEOPOL_DATA_DIR"}}
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**clean, **env},
    )


def json_events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_simulate_writes_under_the_run_dir_and_logs_on_stderr(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = geopol(
        "simulate", "--steps", "2", "--actors", "12", "--events-per-step", "5",
        cwd=work, GEOPOL_RUN_DIR=str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "simulate" / "world.json").is_file()
    assert not (work / "var").exists()
    assert done.stdout.startswith("wrote 2 slots") and len(done.stdout.splitlines()) == 1
    events = json_events(done.stderr)  # stderr is a pipe: JSON lines
    assert [e["event"] for e in events] == ["simulate_done"] and events[0]["stage"] == "simulate"


def write_config(path: Path, run_dir: Path, data_dir: Path, level: str) -> Path:
    path.write_text(
        f"name: t\npaths:\n  run_dir: {run_dir}\n  data_dir: {data_dir}\n"
        f"logging:\n  level: {level}\n  format: json\n"
    )
    return path


def team_data(root: Path) -> Path:
    """A team-data folder holding a ten-day Georgia extract where the build looks for it."""
    source = root / GEORGIA_SOURCE
    source.mkdir(parents=True)
    lines = [v1_line(100 + d, f"202001{d + 1:02d}", "USA", "RUS", "04") for d in range(10)]
    (source / "a.export.CSV").write_text("\n".join(lines) + "\n")
    return root


def test_dataset_reads_paths_data_dir_and_writes_under_the_run_dir(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    data = team_data(tmp_path / "team")
    config = write_config(tmp_path / "c.yaml", tmp_path / "ignored", data, "debug")
    done = geopol(
        "dataset", "--config", str(config), "gdelt-georgia",
        cwd=work, GEOPOL_RUN_DIR=str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run" / "datasets" / "GDELT-GEORGIA"
    assert (out / "train.txt").is_file() and str(out) in done.stdout
    assert not (work / "var").exists() and not (tmp_path / "ignored").exists()
    events = json_events(done.stderr)  # logging.format json, level debug: the ingest's events
    assert events and {e["stage"] for e in events} == {"dataset"}


def test_dataset_honours_the_logging_level_and_geopol_data_dir(tmp_path: Path) -> None:
    data = team_data(tmp_path / "team")
    config = write_config(tmp_path / "c.yaml", tmp_path / "run", tmp_path / "nowhere", "error")
    done = geopol(
        "dataset", "--config", str(config), "gdelt-georgia",
        cwd=tmp_path, GEOPOL_DATA_DIR=str(data),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # level error: no info line
    assert (tmp_path / "run" / "datasets" / "GDELT-GEORGIA" / "test.txt").is_file()


def test_dataset_help_lists_from_store(tmp_path: Path) -> None:
    done = geopol("dataset", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "from-store" in done.stdout and "gdelt-georgia" in done.stdout
    handed_over = geopol("dataset", "from-store", "--help", cwd=tmp_path)
    assert handed_over.returncode == 0 and "geopol dataset from-store" in handed_over.stdout


def test_ingest_tkg_loads_a_benchmark_with_its_ids_once(tmp_path: Path) -> None:
    from shared.event_store import EventStore
    from shared.facts import recent_facts

    data = tmp_path / "TINY14"
    data.mkdir()
    (data / "entity2id.txt").write_text("Alpha\t0\nBeta\t1\nGamma\t2\n")
    (data / "relation2id.txt").write_text("Meet\t0\nAccuse\t1\n")
    (data / "train.txt").write_text("0\t0\t1\t0\n1\t1\t2\t24\n")
    (data / "valid.txt").write_text("0\t1\t2\t48\n")
    (data / "test.txt").write_text("2\t0\t0\t72\n")
    store_dir = tmp_path / "store"
    done = geopol("ingest", "tkg", "--data", str(data), "--store", str(store_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3 entities, 2 relations, steps 0..3" in done.stdout
    store = EventStore(store_dir, step_minutes=1440)
    assert store.entities.key(1) == "Beta" and store.relations.key(1) == "Accuse"
    (latest,) = recent_facts(store, 0, 3, 1)  # what a facts prompt reads: Alpha before day 3
    assert (latest.t, latest.relation, latest.object) == (2, 1, 2)
    again = geopol("ingest", "tkg", "--data", str(data), "--store", str(store_dir), cwd=tmp_path)
    assert again.returncode == 0  # each split is one source: nothing is added twice
    assert len(recent_facts(EventStore(store_dir, step_minutes=1440), 0, 4, 10)) == 2
    (data / "test.txt").write_text("2\t0\t9\t72\n")  # entity 9 does not exist
    bad = geopol("ingest", "tkg", "--data", str(data), "--store", str(tmp_path / "other"),
                 cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "geopol ingest tkg:" in bad.stderr
