"""GEOPOL_RUN_DIR moves everything the pipeline writes: ``${run_dir}`` in a config file, the
Makefile's paths, and the team data folder that ``paths.data_dir`` names."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shared.bootstrap import plan
from shared.config import CONFIG_DIR, REPO_ROOT, TEAM_DATA_DIR, load_config


def test_run_dir_token_follows_the_run_dir_and_its_override(tmp_path: Path) -> None:
    default = CONFIG_DIR / "default.yaml"
    assert load_config(default, env={}).ingest.source == Path("var/simulate")
    moved = load_config(default, env={"GEOPOL_RUN_DIR": str(tmp_path)})
    assert moved.ingest.source == tmp_path / "simulate"
    path = tmp_path / "c.yaml"
    path.write_text("name: c\ningest:\n  source: ${run_dir}/feed\n")  # no paths section
    assert load_config(path, env={}).ingest.source == Path("var/feed")


def test_data_dir_is_the_file_s_then_the_variable_s_then_the_team_folder(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"name: c\npaths:\n  data_dir: {tmp_path / 'file'}\n")
    assert load_config(path, env={}).data_dir == tmp_path / "file"
    env = {"GEOPOL_DATA_DIR": str(tmp_path / "env")}
    assert load_config(path, env=env).data_dir == tmp_path / "env"
    path.write_text("name: c\n")
    assert load_config(path, env={}).data_dir == TEAM_DATA_DIR


def make_dry_run(target: str, **env: str) -> str:
    """The commands ``make -n TARGET`` would run, with ``env`` and no inherited GEOPOL_RUN_DIR."""
    clean = {k: v for k, v in os.environ.items() if k != "GEOPOL_RUN_DIR"}
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", target],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**clean, **env},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_makefile_writes_under_geopol_run_dir(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    for target in ("eval", "dataset", "eval-sim"):
        moved = make_dry_run(target, GEOPOL_RUN_DIR=run)
        assert " var/" not in moved, f"make {target} still writes under var/:\n{moved}"
        assert run in moved
    assert f"--out {run}/datasets/GDELT-GEORGIA" in make_dry_run("eval", GEOPOL_RUN_DIR=run)
    assert "--out var/datasets/GDELT-GEORGIA" in make_dry_run("eval")
    # make run is `geopol pipeline bootstrap`, whose paths come from the config as loaded
    assert "pipeline bootstrap --config" in make_dry_run("run", GEOPOL_RUN_DIR=run)
    config = load_config(CONFIG_DIR / "default.yaml", env={"GEOPOL_RUN_DIR": run})
    for step in plan(config, CONFIG_DIR / "default.yaml"):
        assert step.output.is_relative_to(run), (step.name, step.output)
    default = plan(load_config(CONFIG_DIR / "default.yaml", env={}), CONFIG_DIR / "default.yaml")
    assert default[0].output == Path("var/simulate")
