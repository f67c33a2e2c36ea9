"""The influence surrogate is the graph model itself, and ``geopol export influence`` scores an
export's rows as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from services.graph.export import ExportRequest, export_embeddings
from services.graph.influence import take
from services.graph.influence_surrogate import decoder_samples, surrogate
from shared import influence_scores
from shared.embedding_export import load_export
from shared.tkg_dataset import load_tkg

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def valid_export(tmp_path_factory: pytest.TempPathFactory, artifact_dir, benchmark_dir) -> Path:
    out = tmp_path_factory.mktemp("influence") / "valid-mcq4"
    export_embeddings(ExportRequest(
        artifact=artifact_dir, data=benchmark_dir, split="valid", protocol="tgl-mcq", k=4,
        out=out, steps=2, inverse=True,
    ))  # fmt: skip
    return out


def test_at_its_trained_weights_the_surrogate_scores_as_the_graph_model(
    valid_export: Path, benchmark_dir: Path, graph_model
) -> None:
    export = load_export(valid_export)
    samples, tables = decoder_samples(graph_model, load_tkg(benchmark_dir), export)
    fitted = surrogate(graph_model, samples, tables)
    logits = np.asarray(jax.vmap(fitted.logits, in_axes=(None, 0))(fitted.params, fitted.samples))
    ids = np.asarray(export.arrays["candidate_ids"])
    at_candidates = np.take_along_axis(logits, ids, axis=1)
    np.testing.assert_allclose(at_candidates, export.arrays["scores"], rtol=1e-4, atol=1e-4)
    gold = samples["gold"]
    first = take(fitted.samples, np.array([0]))
    loss = jax.vmap(fitted.loss, in_axes=(None, 0))(fitted.params, first)
    row = logits[0].astype(np.float64)
    logsumexp = row.max() + np.log(np.exp(row - row.max()).sum())
    assert float(loss[0]) == pytest.approx(logsumexp - row[gold[0]], rel=1e-4)  # cross-entropy


def test_export_influence_scores_every_row_of_the_export(
    valid_export: Path, benchmark_dir: Path, artifact_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "export", "influence", "--export", str(valid_export),
         "--data", str(benchmark_dir), "--artifact", str(artifact_dir), "--valid-questions", "4",
         "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    export = load_export(valid_export)
    scores = influence_scores.load(out, export)
    assert scores.influence.shape == (len(export),) and scores.loss.shape == (len(export),)
    valid_rows = scores.manifest["valid_rows"]
    assert len(valid_rows) == 4 and valid_rows == sorted(valid_rows)[-4:]
    assert np.all(scores.influence[valid_rows] == 0)  # not candidates for training
    train = np.setdiff1d(np.arange(len(export)), valid_rows)
    assert np.abs(scores.influence[train]).max() > 0 and np.all(scores.loss > 0)
    assert scores.manifest["lissa"]["depth"] == 100 and scores.manifest["layer"].endswith("fc")
    assert json.loads(done.stdout)["rows"] == len(export)

    other = tmp_path / "other-export"
    export_embeddings(ExportRequest(
        artifact=artifact_dir, data=benchmark_dir, split="test", protocol="tgl-mcq", k=4,
        out=other, steps=2,
    ))  # fmt: skip
    with pytest.raises(influence_scores.InfluenceScoresError, match="another export"):
        influence_scores.load(out, load_export(other))
    (out / influence_scores.SCORES).write_bytes(b"changed")
    with pytest.raises(influence_scores.InfluenceScoresError):
        influence_scores.load(out)
