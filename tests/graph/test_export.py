"""The embedding export: a checked round trip, protocol rules row by row, and no torch in sight."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.graph.baselines import (
    LAMBDAS,
    Benchmark,
    StepScores,
    full_history,
    recurrency_scores,
    tune_recurrency,
)
from services.graph.export import (
    ExportRequest,
    dataset_words,
    export_embeddings,
    step_questions,
    true_object_ranges,
)
from services.graph.queries import iter_step_queries
from shared.calendar import CALENDAR_FILE, step_date
from shared.embedding_export import ExportError, load_export
from shared.tkg_dataset import load_tkg

REPO_ROOT = Path(__file__).resolve().parents[2]
T, K = 3, 4


def request(artifact_dir: Path, benchmark_dir: Path, out: Path, **changes) -> ExportRequest:
    fields = dict(
        artifact=artifact_dir, data=benchmark_dir, split="test", protocol="tgl-mcq",
        k=K, out=out, steps=T,
    )  # fmt: skip
    return ExportRequest(**{**fields, **changes})


@pytest.fixture(scope="module")
def mcq_export(tmp_path_factory: pytest.TempPathFactory, artifact_dir, benchmark_dir) -> Path:
    out = tmp_path_factory.mktemp("mcq")
    export_embeddings(request(artifact_dir, benchmark_dir, out))
    return out


def test_round_trip_files_match_the_manifest(mcq_export: Path, tiny, graph_model) -> None:
    exported = load_export(mcq_export)
    manifest, arrays = exported.manifest, exported.arrays
    n, d = manifest["counts"]["exported"], tiny.cfg.dim
    assert manifest["protocol"] == "tgl-mcq" and manifest["split"] == "test"
    assert (manifest["num_candidates"], manifest["steps"], manifest["dim"]) == (K, T, d)
    assert manifest["graph_artifact"] == graph_model.artifact_id
    assert manifest["counts"]["questions"] == n + manifest["counts"]["skipped_small_pool"]
    assert n > 0
    expected = {
        "subject": ("float32", (n, T, d)),
        "relation": ("float32", (n, d)),
        "candidates": ("float32", (n, K, T, d)),
        "scores": ("float32", (n, K)),
        "query": ("float32", (n, d)),
        "recurrency": ("float32", (n, K)),
        "candidate_ids": ("int64", (n, K)),
        "gold_index": ("int64", (n,)),
        "queries": ("int64", (n, 4)),
    }
    assert {k: (str(a.dtype), a.shape) for k, a in arrays.items()} == expected
    for name in ("subject", "relation", "candidates", "scores", "query", "recurrency"):
        assert np.isfinite(arrays[name]).all()
    rows = np.arange(n)
    gold = arrays["candidate_ids"][rows, arrays["gold_index"]]
    np.testing.assert_array_equal(gold, arrays["queries"][:, 2])
    newest = np.tanh(arrays["candidates"][:, :, -1].astype(np.float64))  # [n, K, d]
    scores = np.einsum("nkd,nd->nk", newest, arrays["query"])
    np.testing.assert_allclose(arrays["scores"], scores, rtol=1e-4, atol=1e-5)


def test_recurrency_rows_are_the_tuned_baseline_s_scores_of_the_candidates(
    mcq_export: Path, benchmark_dir: Path
) -> None:
    """Scored again the way the baseline's own evaluation scores a step (every query of the step,
    inverse ones included), from every fact before it."""
    exported = load_export(mcq_export)
    bench = Benchmark.from_dataset(load_tkg(benchmark_dir))
    params = tune_recurrency(bench, "valid")
    entry = exported.manifest["recurrency"]
    assert entry == {"method": "recurrency", "tuned_on": "valid", **params.to_dict()}
    assert len(entry["lambda"]) == len(entry["alpha"]) == 2 * bench.num_relations
    assert set(entry["lambda"]) <= set(LAMBDAS)
    history = full_history(bench)
    queries, ids = exported.arrays["queries"], exported.arrays["candidate_ids"]
    checked = 0
    for step_queries in iter_step_queries(bench.splits["test"], bench.num_relations):
        history.advance_to(step_queries.t)
        matrix = recurrency_scores(StepScores(history, step_queries), params)
        for i in np.flatnonzero(queries[:, 3] == step_queries.t)[:3]:  # a few per step
            s, r = queries[i, :2]
            row = np.flatnonzero((step_queries.subject == s) & (step_queries.relation == r))[0]
            expected = matrix[row, ids[i]].astype(np.float32)
            np.testing.assert_array_equal(exported.arrays["recurrency"][i], expected)
            checked += 1
    assert checked >= 4 and exported.arrays["recurrency"].any()


def test_the_manifest_holds_display_names_and_the_calendar(
    tmp_path: Path, artifact_dir: Path, benchmark_dir: Path, tiny
) -> None:
    manifest = load_export(export_copy(tmp_path / "A", artifact_dir, benchmark_dir, {})).manifest
    assert manifest["entity_names"] == tiny.entity_names
    assert manifest["relation_names"] == tiny.relation_names
    assert manifest["calendar"] is None  # TINY is no published benchmark and says nothing
    files = {
        "entity2label.txt": "".join(f"Entity {i}\t{i}\n" for i in range(tiny.num_entities)),
        CALENDAR_FILE: '{"origin_utc": "2024-01-01T00:00:00+00:00", "step_seconds": 3600}',
    }
    manifest = load_export(export_copy(tmp_path / "B", artifact_dir, benchmark_dir, files)).manifest
    assert manifest["entity_names"] == [f"Entity {i}" for i in range(tiny.num_entities)]
    assert manifest["relation_names"] == tiny.relation_names
    assert manifest["calendar"] == {"origin_utc": "2024-01-01T00:00:00+00:00", "step_seconds": 3600}


def test_the_calendar_of_icews14_dates_the_exported_steps(shared_data: Path) -> None:
    directory = shared_data / "tkg" / "ICEWS14"
    if not directory.is_dir():
        pytest.skip(f"no {directory}")
    dataset = load_tkg(directory)
    words = dataset_words(dataset)
    assert len(words["entity_names"]) == dataset.num_entities
    assert "Barack Obama" in words["entity_names"]
    first_test_step = int(dataset.splits["test"][:, 3].min()) // dataset.time_step
    assert step_date(words["calendar"], first_test_step).date().isoformat() == "2014-12-01"


def export_copy(data: Path, artifact_dir: Path, benchmark_dir: Path, files: dict) -> Path:
    """Export the valid split of a copy of the benchmark, at ``data``, with ``files`` added."""
    data.mkdir()
    for path in benchmark_dir.iterdir():
        (data / path.name).write_bytes(path.read_bytes())
    for name, text in files.items():
        (data / name).write_text(text)
    out = data.with_name(f"{data.name}-export")
    export_embeddings(request(artifact_dir, data, out, split="valid"))
    return out


def test_the_questions_are_the_split_s_distinct_facts(mcq_export: Path, tiny) -> None:
    exported = load_export(mcq_export)
    test_facts = tiny.facts[tiny.facts[:, 3] >= 10]
    distinct = np.unique(test_facts, axis=0)
    assert exported.manifest["counts"]["questions"] == len(distinct)
    queries = exported.arrays["queries"]
    assert (np.diff(queries[:, 3]) >= 0).all()  # in time order
    assert {tuple(q) for q in queries.tolist()} <= {tuple(f) for f in distinct.tolist()}


def test_mcq_rows_follow_the_protocol(mcq_export: Path, tiny) -> None:
    arrays = load_export(mcq_export).arrays
    facts = tiny.facts
    for (s, r, o, t), ids, position in zip(
        arrays["queries"].tolist(), arrays["candidate_ids"], arrays["gold_index"], strict=True
    ):
        before = facts[(facts[:, 3] >= t - 3) & (facts[:, 3] < t)]
        same_query = facts[(facts[:, 3] == t) & (facts[:, 0] == s) & (facts[:, 1] == r)]
        negatives = np.delete(ids, position)
        assert ids[position] == o and (ids == o).sum() == 1
        assert np.isin(negatives, before[:, [0, 2]]).all()
        assert not np.isin(negatives, same_query[:, 2]).any()


def test_a_tampered_or_incomplete_export_is_refused(mcq_export: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in mcq_export.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    load_export(copy)
    scores = copy / "scores.npy"
    original = scores.read_bytes()
    scores.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    with pytest.raises(ExportError, match="scores.npy"):
        load_export(copy)
    scores.write_bytes(original)
    query = copy / "query.npy"
    original = query.read_bytes()
    changed = np.load(query)
    changed[0, 0] += 1.0
    np.save(query, changed)  # same size and shape: only the hash tells
    with pytest.raises(ExportError, match="query.npy differs from manifest.json"):
        load_export(copy)
    query.write_bytes(original)
    (copy / "subject.npy").unlink()
    with pytest.raises(ExportError, match="missing subject.npy"):
        load_export(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ExportError, match="missing manifest.json"):
        load_export(copy)


def test_the_same_seed_gives_the_same_options_and_another_seed_others(
    mcq_export: Path, tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    again = tmp_path / "again"
    export_embeddings(request(artifact_dir, benchmark_dir, again))
    other = tmp_path / "other"
    export_embeddings(request(artifact_dir, benchmark_dir, other, seed=1))
    first = load_export(mcq_export).arrays["candidate_ids"]
    np.testing.assert_array_equal(load_export(again).arrays["candidate_ids"], first)
    assert not np.array_equal(load_export(other).arrays["candidate_ids"], first)


def test_live_rows_are_the_model_s_top_k_with_the_gold_where_it_was_found(
    tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    out = tmp_path / "live"
    manifest = export_embeddings(
        request(artifact_dir, benchmark_dir, out, protocol="live", k=3, inverse=True)
    )
    arrays = load_export(out).arrays
    assert manifest["inverse"] is True and manifest["counts"]["skipped_small_pool"] == 0
    scores = arrays["scores"]
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    queries, ids, gold_index = arrays["queries"], arrays["candidate_ids"], arrays["gold_index"]
    for q, row, position in zip(queries, ids, gold_index, strict=True):
        assert (position == -1 and q[2] not in row) or row[position] == q[2]
    assert manifest["counts"]["gold_in_candidates"] == int((gold_index >= 0).sum())
    assert (queries[:, 1] >= 3).any()  # inverse questions (r + R) are there


def test_step_questions_and_their_true_objects() -> None:
    triples = np.array([[1, 0, 2], [1, 0, 3], [1, 0, 2], [4, 1, 2]])
    questions = step_questions(triples, num_relations=2, inverse=False)
    assert questions.tolist() == [[1, 0, 2], [1, 0, 3], [4, 1, 2]]
    first, last = true_object_ranges(questions)
    assert [questions[a:b, 2].tolist() for a, b in zip(first, last, strict=True)] == [
        [2, 3], [2, 3], [2]
    ]  # fmt: skip
    with_inverse = step_questions(triples, num_relations=2, inverse=True)
    assert [2, 2, 1] in with_inverse.tolist() and [2, 3, 4] in with_inverse.tolist()


def test_requests_outside_the_protocols_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="K in"):
        request(tmp_path, tmp_path, tmp_path, k=5)
    with pytest.raises(ExportError, match="protocol"):
        request(tmp_path, tmp_path, tmp_path, protocol="ranking")


def test_data_with_another_vocabulary_is_refused(
    tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    other = tmp_path / "OTHER"
    other.mkdir()
    for path in benchmark_dir.iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    names = (other / "entity2id.txt").read_text().replace("e0\t", "zero\t")
    (other / "entity2id.txt").write_text(names)
    with pytest.raises(ExportError, match="vocabulary"):
        export_embeddings(request(artifact_dir, other, tmp_path / "out"))


def test_the_command_runs_without_torch_and_configures_jax_first(
    tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    out = tmp_path / "cli"
    args = [
        "--artifact", str(artifact_dir), "--data", str(benchmark_dir), "--split", "valid",
        "--protocol", "tgl-mcq", "--k", "4", "--steps", "2", "--out", str(out),
    ]  # fmt: skip
    code = (
        "import json, os, sys\n"
        "from services.graph import export\n"
        "jax_at_import = 'jax' in sys.modules\n"
        f"rc = export.main({args!r})\n"
        "print(json.dumps({'rc': rc, 'jax_at_import': jax_at_import,\n"
        "    'jax': 'jax' in sys.modules, 'torch': 'torch' in sys.modules,\n"
        "    'prealloc': os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "rc": 0, "jax_at_import": False, "jax": True, "torch": False, "prealloc": "false"
    }  # fmt: skip
    manifest = load_export(out).manifest
    assert (manifest["split"], manifest["steps"]) == ("valid", 2)
