"""``geopol train graph``: settings come from the config's graph.train section, flags override
them, and the defaults point at what the pipeline serves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.graph.artifact import read_manifest
from services.graph.train import _parser, request_from
from shared.config import ConfigError, load_config


def config_file(tmp_path: Path, train: str) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text(f"name: conf\npaths:\n  run_dir: {tmp_path / 'run'}\ngraph:\n  train:\n{train}")
    return path


def test_config_gives_the_settings_and_flags_override_them(tmp_path: Path) -> None:
    config = load_config(
        config_file(tmp_path, "    epochs: 7\n    history: 2\n    dim: 16\n    static: false\n")
    )
    request = request_from(_parser().parse_args([]), config)
    assert (request.epochs, request.history, request.dim, request.static) == (7, 2, 16, False)
    assert request.patience == 5  # not in the file: the section's default
    assert request.data == tmp_path / "run" / "datasets" / config.ingest.dataset
    assert request.out == config.graph_artifact

    flags = ["--epochs", "3", "--dim", "32", "--static", "--data", str(tmp_path / "ICEWS14")]
    request = request_from(_parser().parse_args(flags), config)
    assert (request.epochs, request.dim, request.history, request.static) == (3, 32, 2, True)
    assert request.out == tmp_path / "run" / "artifacts" / "regcn" / "ICEWS14"


def test_static_defaults_to_whether_the_folder_has_the_entity_word_graph(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, "    epochs: 1\n"))
    with_graph, without = tmp_path / "A", tmp_path / "B"
    with_graph.mkdir()
    without.mkdir()
    (with_graph / "e-w-graph.txt").write_text("0\t0\t0\n")
    assert request_from(_parser().parse_args(["--data", str(with_graph)]), config).static
    assert not request_from(_parser().parse_args(["--data", str(without)]), config).static


def test_a_bad_training_setting_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"graph\.train\.epochs.*0"):
        load_config(config_file(tmp_path, "    epochs: 0\n"))


def test_the_cli_trains_from_a_config_and_writes_the_artifact(
    tmp_path: Path, benchmark_dir: Path
) -> None:
    path = config_file(
        tmp_path,
        f"    data: {benchmark_dir}\n    epochs: 1\n    history: 2\n    dim: 16\n",
    )
    # a fresh process: jax_env must configure XLA before jax is first imported
    code = "import sys; from shared.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "train", "graph", "--config", str(path), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout[done.stdout.index("{\n") :])["best_epoch"] == 0
    artifact = tmp_path / "run" / "artifacts" / "regcn" / "SIM"
    manifest = read_manifest(artifact)
    assert manifest["train_config"]["epochs"] == 1
    assert (manifest["config"]["dim"], manifest["config"]["history"]) == (16, 2)
