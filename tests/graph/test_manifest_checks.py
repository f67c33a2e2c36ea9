"""Manifests are data: the graph artifact, the training checkpoint and the embedding export
refuse a listed file name that leaves its folder, and a malformed manifest, with their own error
naming the manifest and the field (never a KeyError, never a read outside the folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.graph import artifact, checkpoint
from services.graph.artifact import ArtifactError
from services.graph.checkpoint import CheckpointError, RunProgress
from shared.embedding_export import ExportError, load_export, write_small_export

ESCAPES = ["../outside.bin", "/etc/hostname", "sub/params.safetensors", "..", "a\\b"]


def edit_json(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.fixture
def art(tmp_path: Path, artifact_dir: Path) -> Path:
    """A writable copy of the tiny artifact, with a file beside (outside) it to point at."""
    copy = tmp_path / "art"
    shutil.copytree(artifact_dir, copy)
    shutil.copy(copy / artifact.PARAMS_FILE, tmp_path / "outside.bin")
    return copy


@pytest.mark.parametrize("name", ESCAPES)
def test_an_artifact_file_name_outside_its_folder_is_refused(art: Path, name: str) -> None:
    def point_outside(manifest: dict) -> None:
        manifest["files"][name] = manifest["files"].pop(artifact.PARAMS_FILE)

    edit_json(art / artifact.MANIFEST, point_outside)
    with pytest.raises(ArtifactError, match=r"manifest\.json field files .*not a plain file name"):
        artifact.load(art)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m.pop("dims"), "dims"),
        (lambda m: m["dims"].pop("tensors"), "dims.tensors"),
        (lambda m: m["dims"].update(num_entities="10"), "dims.num_entities"),
        (lambda m: m["files"][artifact.PARAMS_FILE].pop("sha256"), "sha256"),
        (lambda m: m["files"][artifact.PARAMS_FILE].update(bytes=True), "bytes"),
        (lambda m: m.update(files=[]), "files"),
        (lambda m: m.update(config=3), "config"),
        (lambda m: m["data"].pop("entities_sha256"), "data.entities_sha256"),
    ],
)
def test_a_malformed_artifact_manifest_names_the_field(art: Path, change, field: str) -> None:
    edit_json(art / artifact.MANIFEST, change)
    with pytest.raises(ArtifactError, match=rf"graph artifact .*manifest\.json.*{field}"):
        artifact.load(art)


def test_an_artifact_manifest_that_is_not_an_object_is_refused(art: Path) -> None:
    (art / artifact.MANIFEST).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="holds a JSON list, not an object"):
        artifact.read_manifest(art)


def write_checkpoint(out: Path) -> Path:
    progress = RunProgress(
        model_config={"history": 2, "dim": 4, "num_blocks": 1, "use_static": False},
        train_config={"epochs": 3, "patience": 2, "seed": 0},
        data={"dataset": "TINY"},
        shuffler_state={"state": 1},
    )
    checkpoint.save(out, {"w": np.zeros(3, np.float32)}, progress)
    return checkpoint.path_in(out) / checkpoint.PROGRESS_FILE


@pytest.mark.parametrize("name", ESCAPES)
def test_a_checkpoint_state_file_outside_its_folder_is_refused(tmp_path: Path, name: str) -> None:
    progress = write_checkpoint(tmp_path / "run")
    edit_json(progress, lambda d: d.update(state_file=name))
    with pytest.raises(CheckpointError, match=r"progress\.json field state_file .*plain file"):
        checkpoint.read_progress(tmp_path / "run")
    assert checkpoint.unfinished(tmp_path / "run")  # unreadable progress: not the last word


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("state_sha256"), "no field state_sha256"),
        (lambda d: d.update(epochs_done="2"), "epochs_done is str"),
        (lambda d: d["train_config"].pop("epochs"), "no field train_config.epochs"),
        (lambda d: d.update(surprise=1), r"unknown fields \['surprise'\]"),
    ],
)
def test_a_malformed_progress_file_names_the_field(tmp_path: Path, change, field: str) -> None:
    edit_json(write_checkpoint(tmp_path / "run"), change)
    with pytest.raises(CheckpointError, match=field):
        checkpoint.read_progress(tmp_path / "run")


def small_export(directory: Path) -> Path:
    n, steps, k, dim = 2, 1, 2, 3
    arrays = {
        "subject": np.zeros((n, steps, dim), np.float32),
        "relation": np.zeros((n, dim), np.float32),
        "candidates": np.zeros((n, k, steps, dim), np.float32),
        "scores": np.zeros((n, k), np.float32),
        "query": np.zeros((n, dim), np.float32),
        "recurrency": np.zeros((n, k), np.float32),
        "candidate_ids": np.zeros((n, k), np.int64),
        "gold_index": np.zeros(n, np.int64),
        "queries": np.zeros((n, 4), np.int64),
    }
    write_small_export(directory, arrays, {"num_candidates": k, "steps": steps, "dim": dim})
    load_export(directory)  # sound before it is edited
    return directory / "manifest.json"


@pytest.mark.parametrize("name", ESCAPES)
def test_an_export_file_name_outside_its_folder_is_refused(tmp_path: Path, name: str) -> None:
    manifest = small_export(tmp_path / "exp")
    shutil.copy(tmp_path / "exp" / "scores.npy", tmp_path / "outside.bin")
    edit_json(manifest, lambda m: m["files"]["scores"].update(file=name))
    with pytest.raises(ExportError, match=r"manifest\.json field files\.scores\.file .*plain"):
        load_export(tmp_path / "exp")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m["files"]["scores"].pop("sha256"), "no field files.scores.sha256"),
        (lambda m: m["files"]["scores"].update(shape="2,2"), "files.scores.shape is str"),
        (lambda m: m["files"].update(scores=[]), "files.scores is list"),
        (lambda m: m.pop("dim"), "no field dim"),
    ],
)
def test_a_malformed_export_manifest_names_the_field(tmp_path: Path, change, field: str) -> None:
    edit_json(small_export(tmp_path / "exp"), change)
    with pytest.raises(ExportError, match=field):
        load_export(tmp_path / "exp")
