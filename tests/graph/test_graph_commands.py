"""``geopol train graph``, ``geopol eval`` and ``geopol export embeddings`` as a user runs them:
the config's logging settings, no progress bar into a pipe, a resumed run that keeps the settings
it was started with and says when --epochs cuts it short, and an evaluation that never scores an
artifact trained on other data or with other flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_evaluate import ENTITIES, RELATIONS, write_toy

from services.graph import checkpoint, evaluate
from services.graph.artifact import read_manifest
from shared.tkg_dataset import load_tkg

CLI = "import sys; from shared.cli import main; sys.exit(main(sys.argv[1:]))"


def geopol(*args: str) -> subprocess.CompletedProcess[str]:
    """A fresh process (jax_env configures XLA before jax is first imported); stderr is a pipe."""
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=600
    )


def json_events(stderr: str) -> list[dict]:
    """The JSON log lines of ``stderr`` (JAX may print plain warnings of its own)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def config(path: Path, run_dir: Path, level: str, fmt: str, train: str = "") -> Path:
    section = f"graph:\n  train:\n{train}" if train else ""
    path.write_text(
        f"name: c\npaths:\n  run_dir: {run_dir}\nlogging:\n  level: {level}\n  format: {fmt}\n"
        + section
    )
    return path


def test_train_honours_logging_draws_no_bar_and_resumes_as_started(
    tmp_path: Path, benchmark_dir: Path
) -> None:
    run = tmp_path / "run"
    started = config(
        tmp_path / "a.yaml", run, "warning", "json",
        f"    data: {benchmark_dir}\n    epochs: 2\n    history: 2\n    dim: 16\n"
        "    static: false\n",
    )  # fmt: skip
    first = geopol("train", "graph", "--config", str(started))  # no --no-progress
    assert first.returncode == 0, first.stderr
    assert "\r" not in first.stderr and "epoch 0" not in first.stderr  # no bar into a pipe
    assert all(e["level"] != "info" for e in json_events(first.stderr))  # level warning
    artifact = run / "artifacts" / "regcn" / "SIM"

    # another config (other history, dim, epochs): --resume keeps the run's own settings
    other = config(
        tmp_path / "b.yaml", run, "info", "json",
        f"    data: {benchmark_dir}\n    epochs: 30\n    history: 3\n    dim: 8\n",
    )  # fmt: skip
    resumed = geopol("train", "graph", "--config", str(other), "--resume", "--epochs", "3")
    assert resumed.returncode == 0, resumed.stderr
    progress = checkpoint.read_progress(artifact)
    assert progress["epochs_done"] == 3
    assert (progress["model_config"]["dim"], progress["model_config"]["history"]) == (16, 2)
    assert "resumed" in [e["event"] for e in json_events(resumed.stderr)]

    shorter = geopol("train", "graph", "--config", str(other), "--resume", "--epochs", "1")
    assert shorter.returncode == 0, shorter.stderr
    (warning,) = [e for e in json_events(shorter.stderr) if e["level"] == "warning"]
    assert (warning["epochs"], warning["started_with"], warning["epochs_done"]) == (1, 3, 3)
    assert "--epochs 1 is fewer than the 3" in warning["note"]
    assert checkpoint.read_progress(artifact)["epochs_done"] == 3


def rewrite_splits(root: Path, bounds: dict[str, tuple[int, int]]) -> None:
    """The toy's facts again, split at other days (same vocabulary)."""
    rows = np.concatenate([np.loadtxt(root / f"{s}.txt", dtype=np.int64, ndmin=2) for s in bounds])
    for split, (lo, hi) in bounds.items():
        part = rows[(rows[:, 3] >= lo) & (rows[:, 3] < hi)]
        np.savetxt(root / f"{split}.txt", part, fmt="%d", delimiter="\t")


def test_eval_retrains_on_other_splits_or_other_flags_and_says_why(tmp_path: Path) -> None:
    data = tmp_path / "TOY"
    write_toy(data)
    common = ["eval", "--data", str(data), "--artifact", str(tmp_path / "art")]
    common += ["--reports", str(tmp_path / "rep"), "--no-progress"]
    first = geopol(*common, "--epochs", "1", "--patience", "1")
    assert first.returncode == 0, first.stderr

    # rebuilt with a larger test split: its days were the first artifact's training days
    rewrite_splits(data, {"train": (0, 15), "valid": (15, 18), "test": (18, 30)})
    console = config(tmp_path / "c.yaml", tmp_path / "run", "info", "console")
    second = geopol(*common, "--epochs", "1", "--patience", "1", "--config", str(console))
    assert second.returncode == 0, second.stderr
    assert "reusing RE-GCN artifact" not in second.stdout
    assert "not reusing it, it was trained on other data (sha256 of test, train, valid" in (
        second.stdout
    )
    assert read_manifest(tmp_path / "art")["data"]["source_sha256"] == load_tkg(data).source_sha256
    assert "epoch_done" in second.stderr and not json_events(second.stderr)  # format console

    quiet = config(tmp_path / "q.yaml", tmp_path / "run", "error", "json")
    third = geopol(*common, "--epochs", "2", "--patience", "1", "--config", str(quiet))
    assert third.returncode == 0, third.stderr
    assert "not reusing it, it was trained with epochs 1, this evaluation asks 2" in third.stdout
    assert read_manifest(tmp_path / "art")["train_config"]["epochs"] == 2
    assert not json_events(third.stderr)  # level error
    assert (ENTITIES, RELATIONS) == (load_tkg(data).num_entities, load_tkg(data).num_relations)


def test_an_artifact_without_data_hashes_is_not_reused(artifact_dir: Path, benchmark_dir: Path):
    args = evaluate._parser().parse_args(["--data", str(benchmark_dir)])
    refusal = evaluate.reuse_refusal(args, artifact_dir, load_tkg(benchmark_dir))
    assert refusal == "its manifest records no sha256 of the data it was trained on"
    assert evaluate.reuse_refusal(args, benchmark_dir, load_tkg(benchmark_dir)) == (
        "there is none yet"
    )


def test_export_honours_the_config_s_logging(
    tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    quiet = config(tmp_path / "c.yaml", tmp_path / "run", "warning", "console")
    done = geopol(
        "export", "embeddings", "--artifact", str(artifact_dir), "--data", str(benchmark_dir),
        "--split", "test", "--k", "4", "--out", str(tmp_path / "exp"), "--config", str(quiet),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["exported"] > 0
    assert "recurrency_tuned" not in done.stderr and "embeddings_exported" not in done.stderr
