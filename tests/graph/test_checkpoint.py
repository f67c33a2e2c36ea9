"""Resumable training: a run cut after two epochs and resumed equals one run of three; a
checkpoint of other settings or with a changed state file is refused; a warm start begins from
the saved model's validation score and records where it came from."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pytest

from services.graph import artifact, checkpoint
from services.graph.config import ModelConfig, TrainConfig
from services.graph.train import TrainError, TrainRequest, train_graph
from shared.tkg_dataset import TkgDataset, load_tkg


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
    saved, reference = checkpoint.read_progress(out), checkpoint.read_progress(straight[0])
    assert saved["epochs_done"] == 3
    assert saved["state_sha256"] == reference["state_sha256"]  # the same arrays, bit for bit
    assert [p.name for p in checkpoint.path_in(out).glob("state-*")] == ["state-0003.safetensors"]


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

    state_file = checkpoint.path_in(out) / checkpoint.read_progress(out)["state_file"]
    payload = bytearray(state_file.read_bytes())
    payload[-1] ^= 0xFF
    state_file.write_bytes(bytes(payload))
    with pytest.raises(TrainError, match="changed after saving"):
        train_graph(request(benchmark_dir, out, resume=True), dataset)


def test_checkpoint_of_other_shapes_is_refused(two_epochs: Path) -> None:
    import jax

    from services.graph import trainer

    progress = checkpoint.read_progress(two_epochs)
    expected = checkpoint.RunProgress(
        **{k: progress[k] for k in ("model_config", "train_config", "data", "shuffler_state")}
    )
    cfg = ModelConfig(**{**progress["model_config"], "dim": 8})
    optimizer = trainer.make_optimizer(TrainConfig())
    template = jax.eval_shape(lambda: trainer.create_state(jax.random.PRNGKey(0), cfg, optimizer))
    with pytest.raises(
        checkpoint.CheckpointError, match=r"is float32\[10, 16\] but this run needs"
    ):
        checkpoint.load(two_epochs, template, expected)
    with pytest.raises(checkpoint.CheckpointError, match="state arrays missing"):
        checkpoint.load(two_epochs, {"w": jax.numpy.zeros(3)}, expected)


def test_warm_start_begins_from_the_saved_model(
    straight, benchmark_dir: Path, dataset: TkgDataset, tmp_path: Path, monkeypatch
) -> None:
    from services.graph import trainer

    source, whole = straight
    out = tmp_path / "warm"

    monkeypatch.setattr(trainer, "_run_epoch", _raise_keyboard_interrupt)  # stop after the start
    with pytest.raises(KeyboardInterrupt):
        train_graph(request(benchmark_dir, out, epochs=1, init_from=source), dataset)
    kept = artifact.read_manifest(out)
    assert kept["train_config"]["init_from"] == str(source)
    assert kept["metrics"]["best_epoch"] == -1
    assert kept["metrics"]["valid"]["filtered"]["mrr"] == pytest.approx(
        whole.best_valid["filtered"]["mrr"], rel=1e-6
    )
    for theirs, ours in zip(
        jax.tree.leaves(artifact.load(source).params),
        jax.tree.leaves(artifact.load(out).params),
        strict=True,
    ):
        np.testing.assert_array_equal(theirs, ours)
    assert checkpoint.unfinished(out)


def test_warm_start_refuses_another_model_vocabulary_or_its_own_folder(
    straight, benchmark_dir: Path, dataset: TkgDataset, tmp_path: Path
) -> None:
    source, _ = straight
    with pytest.raises(TrainError, match="dim: 16 there, 8 here"):
        train_graph(
            request(benchmark_dir, tmp_path / "x", epochs=1, dim=8, init_from=source), dataset
        )
    with pytest.raises(TrainError, match="would overwrite the model it starts from"):
        train_graph(request(benchmark_dir, source, init_from=source), dataset)
    renamed = tmp_path / "RENAMED"
    shutil.copytree(benchmark_dir, renamed)
    (renamed / "entity2id.txt").write_text("".join(f"x{i}\t{i}\n" for i in range(10)))
    with pytest.raises(TrainError, match="entities_sha256"):
        train_graph(request(renamed, tmp_path / "y", init_from=source), load_tkg(renamed))


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


def test_eval_resumes_an_interrupted_run_with_the_settings_it_started_with(
    benchmark_dir: Path, dataset: TkgDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.graph import evaluate, trainer

    out = tmp_path / "model"
    monkeypatch.setattr(trainer, "_run_epoch", _raise_keyboard_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_graph(request(benchmark_dir, out, seed=4, epochs=7), dataset)
    args = evaluate._parser().parse_args(["--data", str(benchmark_dir), "--artifact", str(out)])
    resumed = evaluate.training_request(args, out, dataset)
    assert resumed.resume
    assert (resumed.history, resumed.dim, resumed.seed, resumed.epochs) == (2, 16, 4, 7)
    assert not resumed.static


def _raise_keyboard_interrupt(*args, **kwargs):
    raise KeyboardInterrupt
