"""Resumable training: a run cut after two epochs and resumed equals one run of three; a
checkpoint of other settings or with a changed state file is refused; a warm start begins from
the saved model's validation score and records where it came from."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from services.graph import artifact, checkpoint
from services.graph.train import TrainError, TrainRequest, train_graph
from services.ingest.tkg_loader import TkgDataset, load_tkg


@pytest.fixture(scope="module")
def dataset(benchmark_dir: Path) -> TkgDataset:
    return load_tkg(benchmark_dir)


def request(data: Path, out: Path, **changes) -> TrainRequest:
    base = TrainRequest(
        data=data, out=out, epochs=3, patience=3, history=2, dim=16, static=False, progress=False
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, benchmark_dir: Path, dataset: TkgDataset):
    """Three epochs in one go."""
    out = tmp_path_factory.mktemp("straight") / "model"
    return out, train_graph(request(benchmark_dir, out), dataset)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory: pytest.TempPathFactory, benchmark_dir: Path, dataset: TkgDataset):
    """The same run stopped after two epochs."""
    out = tmp_path_factory.mktemp("legs") / "model"
    train_graph(request(benchmark_dir, out, epochs=2), dataset)
    return out


def test_resumed_run_equals_an_uninterrupted_one(
    straight, two_epochs: Path, benchmark_dir: Path, dataset: TkgDataset, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    shutil.copytree(two_epochs, out)
    resumed = train_graph(request(benchmark_dir, out, resume=True), dataset)
    _, whole = straight
    assert [r["epoch"] for r in resumed.epochs] == [0, 1, 2]
    for name in ("loss", "loss_entity", "valid_mrr_filtered", "valid_mrr_raw"):
        assert resumed.epochs[2][name] == whole.epochs[2][name], name
    assert (resumed.best_epoch, resumed.best_valid) == (whole.best_epoch, whole.best_valid)
    saved = json.loads((checkpoint.path_in(out) / checkpoint.PROGRESS_FILE).read_text())
    assert saved["epochs_done"] == 3


def test_a_finished_run_is_extended_by_raising_epochs(
    two_epochs: Path, benchmark_dir: Path, dataset: TkgDataset, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    shutil.copytree(two_epochs, out)
    again = train_graph(request(benchmark_dir, out, epochs=2, resume=True), dataset)
    assert len(again.epochs) == 2  # nothing left to do: no epoch is run twice
    longer = train_graph(request(benchmark_dir, out, epochs=4, resume=True), dataset)
    assert [r["epoch"] for r in longer.epochs] == [0, 1, 2, 3]


def test_resume_refuses_another_run_or_a_changed_state_file(
    two_epochs: Path, benchmark_dir: Path, dataset: TkgDataset, tmp_path: Path
) -> None:
    with pytest.raises(TrainError, match="no checkpoint"):
        train_graph(request(benchmark_dir, tmp_path / "empty", resume=True), dataset)

    out = tmp_path / "model"
    shutil.copytree(two_epochs, out)
    with pytest.raises(TrainError, match=r"train_config differs: seed: 0 saved, 1 now"):
        train_graph(request(benchmark_dir, out, seed=1, resume=True), dataset)

    state_file = checkpoint.path_in(out) / checkpoint.STATE_FILE
    payload = bytearray(state_file.read_bytes())
    payload[-1] ^= 0xFF
    state_file.write_bytes(bytes(payload))
    with pytest.raises(TrainError, match="changed after saving"):
        train_graph(request(benchmark_dir, out, resume=True), dataset)


def test_checkpoint_of_other_shapes_is_refused(two_epochs: Path) -> None:
    import jax.numpy as jnp

    template = {"params": {"w": jnp.zeros((3, 2), jnp.float32)}}
    progress = json.loads((checkpoint.path_in(two_epochs) / checkpoint.PROGRESS_FILE).read_text())
    expected = checkpoint.RunProgress(
        **{k: progress[k] for k in ("model_config", "train_config", "data", "shuffler_state")}
    )
    with pytest.raises(checkpoint.CheckpointError, match="state arrays missing"):
        checkpoint.load(two_epochs, template, expected)


def test_warm_start_begins_from_the_saved_model(
    straight, benchmark_dir: Path, dataset: TkgDataset, tmp_path: Path
) -> None:
    source, whole = straight
    out = tmp_path / "warm"
    result = train_graph(request(benchmark_dir, out, epochs=1, init_from=source), dataset)
    start = whole.best_valid["filtered"]["mrr"]
    manifest = artifact.read_manifest(out)
    assert manifest["train_config"]["init_from"] == str(source)
    # the first epoch either beat the saved model or the saved model is kept as the best
    mrr = result.best_valid["filtered"]["mrr"]
    assert (result.best_epoch == -1 and mrr == pytest.approx(start, rel=1e-6)) or (
        result.best_epoch == 0 and mrr > start
    )

    with pytest.raises(TrainError, match="dim: 16 there, 8 here"):
        train_graph(
            request(benchmark_dir, tmp_path / "x", epochs=1, dim=8, init_from=source), dataset
        )


def test_an_interrupted_run_is_marked_unfinished_until_resumed(
    benchmark_dir: Path, dataset: TkgDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.graph import trainer

    out = tmp_path / "model"
    run_epoch = trainer._run_epoch
    calls = []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "_run_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_graph(request(benchmark_dir, out), dataset)
    assert checkpoint.unfinished(out)
    assert artifact.read_manifest(out)["metrics"]["best_epoch"] == 0

    monkeypatch.setattr(trainer, "_run_epoch", run_epoch)
    result = train_graph(request(benchmark_dir, out, resume=True), dataset)
    assert [r["epoch"] for r in result.epochs] == [0, 1, 2]
    assert not checkpoint.unfinished(out)
