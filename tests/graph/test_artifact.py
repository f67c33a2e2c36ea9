"""The graph artifact: exact round trip; the manifest is checked before any tensor is read."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors import numpy as st_numpy

from services.graph import artifact, model
from services.graph.config import ModelConfig, TrainConfig
from shared.manifest import vocab_sha256

CFG = ModelConfig(
    num_entities=12,
    num_relations=3,
    dim=8,
    channels=2,
    num_blocks=4,
    num_words=5,
    num_static_relations=2,
)
STATIC = np.array([[0, 0, 1], [3, 1, 4], [7, 1, 0]])


@pytest.fixture(scope="module")
def trained() -> tuple[dict, dict]:
    params = jax.device_get(model.init_params(jax.random.PRNGKey(0), CFG))
    return params, jax.device_get(model.init_batch_stats(CFG))


def save_to(directory: Path, trained: tuple[dict, dict]) -> Path:
    params, batch_stats = trained
    data = artifact.DataInfo(
        dataset="TINY",
        cutoff_t=41,
        num_entities=12,
        num_relations=3,
        entities_sha256=vocab_sha256([f"e{i}" for i in range(12)]),
        relations_sha256=vocab_sha256(["a", "b", "c"]),
        source_sha256={"train": "x"},
    )
    artifact.save(
        directory,
        model_config=CFG,
        train_config=TrainConfig().to_dict(),
        params=params,
        batch_stats=batch_stats,
        static_triples=STATIC,
        data=data,
        metrics={"mrr": 0.5},
    )
    return directory


@pytest.fixture
def no_tensor_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to parse a safetensors file fails the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("safetensors was read before the manifest check refused the artifact")

    monkeypatch.setattr(st_numpy, "load", forbidden)
    monkeypatch.setattr(st_numpy, "load_file", forbidden)


def test_round_trip_gives_identical_params(tmp_path: Path, trained: tuple[dict, dict]) -> None:
    save_to(tmp_path, trained)
    loaded = artifact.load(tmp_path, num_entities=12, num_relations=3, dim=8)
    assert loaded.model_config == CFG
    for original, restored in ((trained[0], loaded.params), (trained[1], loaded.batch_stats)):
        assert jax.tree.structure(original) == jax.tree.structure(restored)
        for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(restored), strict=True):
            assert b.dtype == np.float32
            np.testing.assert_array_equal(np.asarray(a), b)
    np.testing.assert_array_equal(loaded.static_triples, STATIC)
    manifest = loaded.manifest
    assert manifest["kind"] == "regcn" and manifest["data"]["cutoff_t"] == 41
    assert set(manifest["files"]) == {"params.safetensors", "static_graph.safetensors"}


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ({"num_entities": 13}, "num_entities is 12 in manifest.json but 13 is expected"),
        ({"dim": 200}, "dim is 8 in manifest.json but 200 is expected"),
        ({"num_relations": 4}, "num_relations is 3 in manifest.json but 4 is expected"),
    ],
)
def test_mismatched_counts_are_refused_before_tensors_are_read(
    tmp_path: Path, trained: tuple[dict, dict], no_tensor_reads: None, expect: dict, message: str
) -> None:
    save_to(tmp_path, trained)
    with pytest.raises(artifact.ArtifactError, match=message):
        artifact.load(tmp_path, **expect)


def test_tampered_file_is_refused_by_its_hash(
    tmp_path: Path, trained: tuple[dict, dict], no_tensor_reads: None
) -> None:
    save_to(tmp_path, trained)
    path = tmp_path / "params.safetensors"
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(payload))
    with pytest.raises(artifact.ArtifactError, match="sha256 of params.safetensors is .* but"):
        artifact.load(tmp_path, num_entities=12, dim=8)


def test_missing_file_and_missing_manifest_are_refused(
    tmp_path: Path, trained: tuple[dict, dict], no_tensor_reads: None
) -> None:
    save_to(tmp_path, trained)
    (tmp_path / "static_graph.safetensors").unlink()
    with pytest.raises(artifact.ArtifactError, match="missing file static_graph.safetensors"):
        artifact.load(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(artifact.ArtifactError, match="missing manifest.json"):
        artifact.load(tmp_path)


def test_other_kinds_of_artifact_are_refused(tmp_path: Path, trained: tuple[dict, dict]) -> None:
    save_to(tmp_path, trained)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["kind"] = "llm-adapter"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        artifact.ArtifactError, match="kind is 'llm-adapter' .* 'regcn' is expected"
    ):
        artifact.load(tmp_path)
