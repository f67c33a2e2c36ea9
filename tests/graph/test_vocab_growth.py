"""A warm start on a grown vocabulary (a live store's later export): every old row is carried over
bit for bit, inverse relation rows move with R, the grown model scores old queries as before,
the manifest records the growth, and a vocabulary that is not an extension is refused."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.graph import artifact
from services.graph.embeddings import GraphModel, entity_scores
from services.graph.history import RecentWindow
from services.graph.train import TrainError, TrainRequest, train_graph
from services.graph.vocab_growth import Growth, VocabularyGrowthError, check_extends, grow
from shared.manifest import vocab_sha256
from shared.tkg_dataset import load_tkg

NEW_ENTITIES, NEW_RELATIONS = 4, 1


def test_grow_copies_old_rows_and_moves_inverse_relations() -> None:
    rng = np.random.default_rng(0)
    old = {"entity": rng.normal(size=(3, 2)), "relation": rng.normal(size=(4, 2)), "gru": [1.0]}
    fresh = {"entity": np.full((5, 2), 7.0), "relation": np.full((6, 2), 9.0)}
    grown = grow(old, fresh)  # 3 -> 5 entities, 2 -> 3 relations
    np.testing.assert_array_equal(grown["entity"][:3], old["entity"].astype(np.float32))
    np.testing.assert_array_equal(grown["entity"][3:], 7.0)
    relation = grown["relation"]
    np.testing.assert_array_equal(relation[:2], old["relation"][:2].astype(np.float32))
    np.testing.assert_array_equal(relation[2], 9.0)  # the new relation
    np.testing.assert_array_equal(relation[3:5], old["relation"][2:].astype(np.float32))
    np.testing.assert_array_equal(relation[5], 9.0)  # its inverse
    assert grown["gru"] is old["gru"]
    with pytest.raises(VocabularyGrowthError, match=r"entity of the artifact is \[3, 2\]"):
        grow(old, {**fresh, "entity": np.zeros((2, 2))})  # fewer rows than the artifact


def test_check_extends_accepts_a_prefix_only() -> None:
    data = {
        "num_entities": 2,
        "num_relations": 1,
        "entities_sha256": vocab_sha256(["a", "b"]),
        "relations_sha256": vocab_sha256(["r"]),
    }
    growth = check_extends(data, ["a", "b", "c"], ["r"])
    assert growth == Growth((2, 3), (1, 1)) and growth.grown
    assert not check_extends(data, ["a", "b"], ["r"]).grown
    with pytest.raises(VocabularyGrowthError, match="entities: the first 2 names"):
        check_extends(data, ["b", "a", "c"], ["r"])
    with pytest.raises(VocabularyGrowthError, match="relations: the artifact knows 1, .* has 0"):
        check_extends(data, ["a", "b"], [])


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, benchmark_dir: Path) -> Path:
    """A one-epoch model of the tiny benchmark."""
    out = tmp_path_factory.mktemp("source") / "model"
    train_graph(_request(benchmark_dir, out), load_tkg(benchmark_dir))
    return out


def _request(data: Path, out: Path, **changes) -> TrainRequest:
    base = TrainRequest(
        data=data, out=out, epochs=1, patience=1, history=2, dim=16, static=False, progress=False
    )
    return replace(base, **changes)


def _grown_benchmark(benchmark_dir: Path, directory: Path) -> Path:
    """The tiny benchmark with entities and a relation appended to its vocabulary (no new
    facts, so old queries see the same history)."""
    shutil.copytree(benchmark_dir, directory)
    for name, prefix, extra in (
        ("entity2id.txt", "new-e", NEW_ENTITIES),
        ("relation2id.txt", "new-r", NEW_RELATIONS),
    ):
        path = directory / name
        known = path.read_text().splitlines()
        added = [f"{prefix}{i}\t{len(known) + i}" for i in range(extra)]
        path.write_text("\n".join(known + added) + "\n")
    return directory


def _scores(directory: Path, tiny, subjects: np.ndarray, relations: np.ndarray) -> np.ndarray:
    loaded = artifact.load(directory)
    cfg = loaded.model_config
    window = RecentWindow(cfg.num_entities, cfg.num_relations, cfg.history, 1)
    for t in range(8):
        window.advance(t, tiny.triples_at(t))
    graph_model = GraphModel.from_artifact(loaded)
    return entity_scores(graph_model, graph_model.embed(window), subjects, relations)[0]


def test_a_warm_start_on_a_grown_vocabulary_scores_old_queries_as_before(
    source: Path, benchmark_dir: Path, tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.graph import trainer

    grown_dir = _grown_benchmark(benchmark_dir, tmp_path / "GROWN")
    out = tmp_path / "warm"
    monkeypatch.setattr(trainer, "_run_epoch", _interrupt)  # keep the grown start as saved
    with pytest.raises(KeyboardInterrupt):
        train_graph(_request(grown_dir, out, init_from=source), load_tkg(grown_dir))

    manifest = artifact.read_manifest(out)
    n, r = tiny.num_entities, tiny.num_relations
    assert manifest["train_config"]["init_vocabulary"] == {
        "entities": [n, n + NEW_ENTITIES],
        "relations": [r, r + NEW_RELATIONS],
    }
    before, after = artifact.load(source).params, artifact.load(out).params
    np.testing.assert_array_equal(after["entity"][:n], before["entity"])
    np.testing.assert_array_equal(after["relation"][:r], before["relation"][:r])
    np.testing.assert_array_equal(
        after["relation"][r + NEW_RELATIONS : 2 * r + NEW_RELATIONS], before["relation"][r:]
    )
    np.testing.assert_array_equal(
        after["gcn"]["layer_0"]["w_neighbor"], before["gcn"]["layer_0"]["w_neighbor"]
    )

    subjects = np.repeat(np.arange(n), r)
    relations = np.tile(np.arange(r), n)
    old = _scores(source, tiny, subjects, relations)
    new = _scores(out, tiny, subjects, relations)
    assert new.shape == (len(subjects), n + NEW_ENTITIES)
    np.testing.assert_allclose(new[:, :n], old, rtol=1e-5, atol=1e-5)


def test_a_warm_start_refuses_a_vocabulary_that_is_not_an_extension(
    source: Path, benchmark_dir: Path, tmp_path: Path
) -> None:
    shuffled = tmp_path / "SHUFFLED"
    shutil.copytree(benchmark_dir, shuffled)
    names = (shuffled / "entity2id.txt").read_text().splitlines()
    swapped = [names[1].split("\t")[0], names[0].split("\t")[0]]
    lines = [f"{swapped[0]}\t0", f"{swapped[1]}\t1", *names[2:]]
    (shuffled / "entity2id.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainError, match="does not extend: entities: the first 10 names"):
        train_graph(_request(shuffled, tmp_path / "x", init_from=source), load_tkg(shuffled))


def _interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt
