"""The graph stage: snapshots advance its window, queries get checked EMBEDDINGS replies that
equal the model's own computation and the export's rows, whatever order messages arrive in."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from services.graph import embeddings
from services.graph.artifact import ArtifactError, read_manifest
from services.graph.export import ExportRequest, export_embeddings
from services.graph.history import RecentWindow
from services.graph.oov import OovCounter
from services.graph.service import (
    GraphStage,
    ServedGraph,
    build_stage,
    check_vocabulary,
    live_recurrency,
    load_artifact,
    training_data,
)
from shared.abstention import read_abstention
from shared.config import DEFAULT_CONFIG, load_config
from shared.embedding_export import load_export
from shared.event_store import QUAD_SCHEMA, ClosedStepError, KeyLabels
from shared.graph_frames import FRAME_NAMES, candidate_ids, check_frames
from shared.ids import query_id
from shared.protocol import MessageType, decode, encode, new_message
from shared.tkg_dataset import load_tkg
from shared.work_messages import next_queries, snapshot_message

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from shared.cli import main; sys.exit(main(sys.argv[1:]))"
T, K = 3, 4


def make_stage(graph_model, tiny, store) -> GraphStage:
    window = RecentWindow(tiny.num_entities, tiny.num_relations, tiny.cfg.history, T)
    return GraphStage(graph_model, window, store, K)


def snapshot(tiny, t: int):
    return snapshot_message("TINY", t, tiny.triples_at(t), tiny.num_entities, tiny.num_relations)


def query(t: int, s: int, r: int, attempt: int = 1):
    meta = {"dataset": "TINY", "step": t, "subject": s, "relation": r, "attempt": attempt}
    return new_message(MessageType.QUERY, query_id("TINY", t, s, r), [], meta=meta)


def direct_answer(graph_model, tiny, t: int, s: int, r: int):
    """Candidates and frames computed straight from a window of the real steps before ``t``."""
    window = RecentWindow(tiny.num_entities, tiny.num_relations, tiny.cfg.history, T)
    for step in range(t):
        window.advance(step, tiny.triples_at(step))
    return graph_model.live(graph_model.embed(window), s, r, K)


@pytest.fixture
def store(tmp_path: Path, tiny):
    return tiny.open_store(tmp_path / "store")


def test_snapshot_then_query_replies_with_checked_embeddings(graph_model, tiny, store) -> None:
    tiny.append_steps(store, range(6))
    stage = make_stage(graph_model, tiny, store)
    for t in range(6):
        assert stage.handle("queries", snapshot(tiny, t)) == []
    asked = query(6, 3, 1, attempt=2)
    [(socket, reply)] = stage.handle("queries", asked)
    assert socket == "embeddings" and reply.type is MessageType.EMBEDDINGS
    assert (reply.id, reply.trace_id) == (asked.id, asked.trace_id)
    d = tiny.cfg.dim
    assert [f.shape for f in reply.frames] == [(T, d), (d,), (K, T, d), (K,), (d,)]
    assert all(f.dtype == np.float32 and np.isfinite(f).all() for f in reply.frames)
    assert {k: reply.meta[k] for k in asked.meta} == dict(asked.meta)
    assert reply.meta["graph_artifact"] == graph_model.artifact_id
    assert reply.meta["data_cutoff"] == 5 and reply.meta["protocol"] == "live"
    assert len(reply.meta["candidates"]) == K

    received = decode(encode(reply), accept=frozenset({MessageType.EMBEDDINGS}))
    assert (received.id, received.trace_id, received.meta) == (reply.id, reply.trace_id, reply.meta)
    for sent, got in zip(reply.frames, received.frames, strict=True):
        np.testing.assert_array_equal(sent, got)
    frames = check_frames(received.frames, steps=T, dim=d)  # as the LLM stage reads it
    ids = candidate_ids(received.meta, frames.num_candidates)
    newest = np.tanh(frames.candidates[:, -1].astype(np.float64))
    np.testing.assert_allclose(frames.scores, newest @ frames.query, rtol=1e-4, atol=1e-5)

    candidates, expected_frames = direct_answer(graph_model, tiny, 6, 3, 1)
    assert ids.tolist() == candidates.tolist()
    for sent, expected in zip(reply.frames, expected_frames, strict=True):
        np.testing.assert_allclose(sent, expected, rtol=1e-6)


def test_with_a_recurrency_scorer_the_reply_carries_the_recurrency_frame(
    graph_model, tiny, store
) -> None:
    from services.graph.baselines import RecurrencyParams
    from services.graph.live_recurrency import StoreRecurrency

    tiny.append_steps(store, range(6))
    total = 2 * tiny.num_relations
    params = RecurrencyParams(np.full(total, 5), np.full(total, 8))
    recurrency = StoreRecurrency(store, params, tiny.num_entities, tiny.num_relations)
    window = RecentWindow(tiny.num_entities, tiny.num_relations, tiny.cfg.history, T)
    stage = GraphStage(graph_model, window, store, K, recurrency)
    [(_, reply)] = stage.handle("queries", query(6, 3, 1))
    assert len(reply.frames) == 6 and reply.frames[5].shape == (K,)
    frames = check_frames(reply.frames, steps=T, dim=tiny.cfg.dim)  # still a valid layout
    ids = candidate_ids(reply.meta, frames.num_candidates)
    np.testing.assert_array_equal(reply.frames[5], recurrency.scores(6, 3, 1, ids))


def test_embeddings_are_computed_once_per_snapshot_not_per_query(
    graph_model, tiny, store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = embeddings.window_embeddings
    monkeypatch.setattr(embeddings, "window_embeddings", lambda *a: calls.append(1) or real(*a))
    tiny.append_steps(store, range(6))
    stage = make_stage(graph_model, tiny, store)
    for t in range(5):
        stage.handle("queries", snapshot(tiny, t))
    for s, r in [(0, 0), (1, 2), (4, 1)]:
        stage.handle("queries", query(5, s, r))
    assert len(calls) == 1
    stage.handle("queries", snapshot(tiny, 5))
    stage.handle("queries", query(6, 0, 0))
    stage.handle("queries", query(6, 2, 2))
    assert len(calls) == 2


def test_a_query_before_its_snapshot_rebuilds_the_window_from_the_store(
    graph_model, tiny, store
) -> None:
    tiny.append_steps(store, range(6))  # ingest stored steps 0..5; no snapshot reached us
    stage = make_stage(graph_model, tiny, store)
    [(_, reply)] = stage.handle("queries", query(6, 7, 2))
    assert stage.window.horizon == 5 and stage.window.snapshot_steps == [2, 3, 4, 5]
    candidates, frames = direct_answer(graph_model, tiny, 6, 7, 2)
    assert reply.meta["candidates"] == candidates.tolist()
    for sent, expected in zip(reply.frames, frames, strict=True):
        np.testing.assert_allclose(sent, expected, rtol=1e-6)
    # the late snapshots arrive afterwards: already covered, so nothing changes
    version = stage.window.version
    stage.handle("queries", snapshot(tiny, 5))
    assert stage.window.version == version


def test_a_missed_snapshot_is_read_from_the_store(graph_model, tiny, store) -> None:
    tiny.append_steps(store, range(5))
    stage = make_stage(graph_model, tiny, store)
    for t in (0, 1, 2, 4):  # the snapshot of step 3 was lost on the way
        stage.handle("queries", snapshot(tiny, t))
    assert stage.window.snapshot_steps == [1, 2, 3, 4]


def test_a_late_query_never_sees_its_own_step_or_later(graph_model, tiny, store) -> None:
    tiny.append_steps(store, range(9))
    stage = make_stage(graph_model, tiny, store)
    for t in range(9):
        stage.handle("queries", snapshot(tiny, t))
    [(_, reply)] = stage.handle("queries", query(5, 1, 0, attempt=3))  # a re-sent query
    candidates, frames = direct_answer(graph_model, tiny, 5, 1, 0)
    assert reply.meta["candidates"] == candidates.tolist() and reply.meta["data_cutoff"] == 4
    for sent, expected in zip(reply.frames, frames, strict=True):
        np.testing.assert_allclose(sent, expected, rtol=1e-6)
    assert stage.window.snapshot_steps == [5, 6, 7, 8]  # the live window is left as it was


def test_a_backlog_of_late_queries_rebuilds_one_history_per_step_and_answers_the_same(
    graph_model, tiny, store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart behind a day of steps every query is late: one store rebuild per step,
    not per query, and each answer equals the one computed from the real history alone."""
    tiny.append_steps(store, range(9))
    stage = make_stage(graph_model, tiny, store)
    for t in range(9):
        stage.handle("queries", snapshot(tiny, t))
    rebuilds: list[int] = []
    real = RecentWindow.rebuild
    monkeypatch.setattr(
        RecentWindow,
        "rebuild",
        lambda w, st, before: rebuilds.append(before) or real(w, st, before),
    )
    backlog = [(t, s, r) for t in (4, 5, 6) for s, r in [(1, 0), (3, 2), (7, 1)]]
    replies = [stage.handle("queries", query(t, s, r))[0][1] for t, s, r in backlog]
    assert rebuilds == [4, 5, 6]
    for (t, s, r), reply in zip(backlog, replies, strict=True):
        candidates, frames = direct_answer(graph_model, tiny, t, s, r)
        assert reply.meta["candidates"] == candidates.tolist()
        for sent, expected in zip(reply.frames, frames, strict=True):
            np.testing.assert_allclose(sent, expected, rtol=1e-6)
    stage.late_steps = 2  # the oldest step falls out of a full cache and is rebuilt again
    stage.handle("queries", query(7, 1, 0))
    stage.handle("queries", query(4, 1, 0))
    assert rebuilds == [4, 5, 6, 7, 4]


def quads(tiny, facts: np.ndarray) -> pl.DataFrame:
    """``(s, r, o, t)`` id rows as a batch in the reader contract, keys as the store names them."""
    return pl.DataFrame(
        {
            "event_id": [None] * len(facts),
            "subject": [tiny.entity_names[s] for s in facts[:, 0]],
            "relation": [tiny.relation_names[r] for r in facts[:, 1]],
            "object": [tiny.entity_names[o] for o in facts[:, 2]],
            "t": facts[:, 3].tolist(),
            "goldstein": [None] * len(facts),
            "num_mentions": [None] * len(facts),
            "quad_class": [None] * len(facts),
        },
        schema=QUAD_SCHEMA,
    )


def test_late_rows_for_closed_steps_change_no_answer_of_a_running_or_a_restarted_graph(
    graph_model, tiny, store
) -> None:
    """Issue 9, item 7: rows for steps already closed arrive after a query was answered (and
    the last snapshot comes again, as after an ingest restart). The store refuses them, so the
    re-sent query gets the same EMBEDDINGS from the graph that kept running and from one
    rebuilt from the store, bit for bit."""
    tiny.append_steps(store, range(6))
    running = make_stage(graph_model, tiny, store)
    for t in range(6):  # as ingest closes a step: the store first, then the snapshot
        store.close_through(t)
        running.handle("queries", snapshot(tiny, t))
    [(_, first)] = running.handle("queries", query(6, 3, 1))

    late = np.array([[3, 1, 7, 5], [7, 2, 3, 5], [1, 0, 3, 2], [3, 1, 2, 6]], dtype=np.int64)
    with pytest.raises(ClosedStepError, match=r"steps \[2, 5\]"):
        store.append(quads(tiny, late), source="late", source_sha256="a" * 64)
    open_rows, refused = store.split_closed(quads(tiny, late))  # what ingest then stores
    assert refused.height == 3
    store.append(open_rows, source="late", source_sha256="a" * 64)
    running.handle("queries", snapshot(tiny, 5))

    [(_, again)] = running.handle("queries", query(6, 3, 1, attempt=2))
    restarted = make_stage(graph_model, tiny, tiny.open_store(store.root))
    [(_, rebuilt)] = restarted.handle("queries", query(6, 3, 1, attempt=2))
    for reply in (again, rebuilt):
        assert reply.meta["candidates"] == first.meta["candidates"]
        assert reply.meta["data_cutoff"] == first.meta["data_cutoff"] == 5
        for got, expected in zip(reply.frames, first.frames, strict=True):
            np.testing.assert_array_equal(got, expected)


def test_a_query_the_model_has_no_embedding_for_gets_an_abstention_and_is_counted(
    graph_model, tiny, store
) -> None:
    tiny.append_steps(store, range(3))
    registry = CollectorRegistry()
    stage = GraphStage(
        graph_model,
        RecentWindow(tiny.num_entities, tiny.num_relations, tiny.cfg.history, T),
        store,
        K,
        oov=OovCounter(registry),
    )
    new_entity, new_relation = tiny.num_entities, tiny.num_relations  # ids given after training
    asked = [query(3, new_entity, 0), query(3, 1, new_relation), query(3, new_entity, 99)]
    replies = [stage.handle("queries", q) for q in asked]
    for q, [(socket, reply)] in zip(asked, replies, strict=True):
        assert socket == "embeddings" and reply.type is MessageType.ABSTAIN
        assert (reply.id, reply.trace_id, reply.frames) == (q.id, q.trace_id, ())
        assert decode(encode(reply)).meta == reply.meta  # a valid message on the wire
    assert [read_abstention(r).unknown for [(_, r)] in replies] == [
        ("subject",),
        ("relation",),
        ("subject", "relation"),
    ]
    assert replies[0][0][1].meta["graph_artifact"] == graph_model.artifact_id
    # known queries of the same step are still answered, and the step's share is kept
    [(_, known)] = stage.handle("queries", query(3, 1, 0))
    assert known.type is MessageType.EMBEDDINGS
    assert max(known.meta["candidates"]) < tiny.num_entities  # never an unknown candidate
    assert stage.oov.steps[3] == [4, 3]
    fields = {"stage": "graph", "field": "subject"}
    assert registry.get_sample_value("geopol_graph_unknown_query_fields_total", fields) == 2
    assert registry.get_sample_value("geopol_graph_unknown_queries_total", {"stage": "graph"}) == 3
    assert registry.get_sample_value("geopol_graph_oov_step_unknown", {"stage": "graph"}) == 3
    # a snapshot fact naming a new entity cannot enter the history: counted as dropped
    facts = np.array([[0, 0, 1], [new_entity, 0, 2], [1, new_relation, 0]])
    stage.handle("queries", snapshot_message("TINY", 3, facts, new_entity + 1, new_relation + 1))
    assert stage.oov.dropped_facts == 2
    assert registry.get_sample_value("geopol_graph_unknown_facts_total", {"stage": "graph"}) == 2


def test_a_negative_id_is_malformed_not_new(graph_model, tiny, store) -> None:
    stage = make_stage(graph_model, tiny, store)
    with pytest.raises(ValueError, match="negative id"):
        stage.handle("queries", query(3, -1, 0))


def test_a_store_with_another_vocabulary_is_refused(
    tiny, store, tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    manifest = read_manifest(artifact_dir)
    tiny.append_steps(store, range(2))
    other = tiny.open_store(tmp_path / "other")
    tiny.append_steps(other, range(2), entity_order=tiny.entity_names[::-1])
    for training in (load_tkg(benchmark_dir), None):  # a whole vocabulary is checked by hash
        check_vocabulary(store, manifest, training, benchmark_dir)  # the artifact's names in order
        with pytest.raises(ArtifactError, match="vocabulary"):
            check_vocabulary(other, manifest, training, benchmark_dir)


def growing_store(tiny, root: Path, entities: list[str], relations: list[str]):
    """A store that has registered only ``entities`` and ``relations`` so far, in that order."""
    store = tiny.open_store(root)
    row = {"subject": entities[0], "relation": relations[0], "object": entities[0], "t": 0}
    frame = pl.DataFrame([{**dict.fromkeys(QUAD_SCHEMA), **row}], schema=QUAD_SCHEMA)
    labels = KeyLabels(entities=dict.fromkeys(entities), relations=dict.fromkeys(relations))
    sha = hashlib.sha256(repr((entities, relations)).encode()).hexdigest()
    store.append(frame, source="growing", source_sha256=sha, labels=labels)
    return store


def test_a_smaller_store_is_verified_against_the_training_folder_names(
    tiny, tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    """Issue 9, item 8: a fresh pipeline's store holds fewer entities than the artifact. Its keys
    must be the first names of the training vocabulary, id by id."""
    manifest, training = read_manifest(artifact_dir), load_tkg(benchmark_dir)
    prefix = growing_store(tiny, tmp_path / "prefix", tiny.entity_names[:6], ["r0", "r1"])
    with capture_logs() as logs:
        check_vocabulary(prefix, manifest, training, benchmark_dir)
    assert logs == []

    wrong = [*tiny.entity_names[:2], "X", *tiny.entity_names[3:6]]
    swapped = growing_store(tiny, tmp_path / "wrong", wrong, ["r0", "r1"])
    with pytest.raises(ArtifactError) as err:
        check_vocabulary(swapped, manifest, training, benchmark_dir)
    assert str(tmp_path / "wrong") in str(err.value)
    assert "entity id 2 is 'X', but 'e2'" in str(err.value)
    relations = growing_store(tiny, tmp_path / "rel", tiny.entity_names, ["r1"])
    with pytest.raises(ArtifactError, match="relation id 0 is 'r1', but 'r0'"):
        check_vocabulary(relations, manifest, training, benchmark_dir)

    with capture_logs() as logs:  # no training folder: unverified, and the log says which
        check_vocabulary(swapped, manifest, None, tmp_path / "absent")
    assert [(e["event"], e["missing_data"]) for e in logs] == [
        ("vocabulary_unverified", str(tmp_path / "absent"))
    ]


def test_without_the_training_folder_the_recurrency_frame_is_off(tiny, tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert training_data(tmp_path / "absent") is None
    assert [(e["event"], e["data"]) for e in logs] == [
        ("recurrency_frame_off", str(tmp_path / "absent"))
    ]
    assert live_recurrency(None, tiny.open_store(tmp_path / "store"), tiny.num_entities, 3) is None


def test_the_artifact_is_checked_against_the_training_folder(
    tiny, tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    training = load_tkg(benchmark_dir)
    assert load_artifact(artifact_dir, training).manifest == read_manifest(artifact_dir)

    renamed = tiny.write_benchmark(tmp_path / "renamed")
    (renamed / "relation2id.txt").write_text("r0\t0\nr1\t1\nR2\t2\n")
    with pytest.raises(ArtifactError) as err:
        load_artifact(artifact_dir, load_tkg(renamed))
    assert str(renamed) in str(err.value) and str(artifact_dir) in str(err.value)
    assert "data.relations_sha256" in str(err.value)

    other_dims = tmp_path / "other_dims"
    shutil.copytree(artifact_dir, other_dims)
    manifest = json.loads((other_dims / "manifest.json").read_text())
    manifest["dims"]["num_entities"] = 11  # the vocabulary hashes still say the folder's 10
    (other_dims / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="num_entities is 11 in manifest.json but 10"):
        load_artifact(other_dims, training)


def served_config(tmp_path: Path, artifact_dir: Path, data: Path):
    """The default config, serving ``artifact_dir`` with ``data`` as its training folder."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    raw["paths"]["run_dir"] = str(tmp_path / "run")
    raw["ingest"]["mapping"]["step_minutes"] = 1440
    raw["graph"]["artifact"] = str(artifact_dir)
    raw["graph"]["train"]["data"] = str(data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_config(path, env={})


def test_build_stage_checks_a_growing_store_against_the_training_folder_it_tunes_on(
    tiny, tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    config = served_config(tmp_path, artifact_dir, benchmark_dir)
    growing_store(tiny, config.store_dir, tiny.entity_names[:4], ["r0"])
    stage = build_stage(config)
    assert stage.recurrency is not None and stage.store.entities.keys() == tiny.entity_names[:4]

    growing_store(tiny, config.store_dir, ["e7"], ["r0"])  # one more key, not the next name
    with pytest.raises(ArtifactError, match="entity id 4 is 'e7', but 'e4'"):
        build_stage(config)
    other = tiny.write_benchmark(tmp_path / "other")
    (other / "entity2id.txt").write_text("".join(f"E{i}\t{i}\n" for i in range(10)))
    with pytest.raises(ArtifactError, match="data.entities_sha256"):
        build_stage(served_config(tmp_path, artifact_dir, other))


def test_service_replies_equal_the_exported_rows(
    graph_model, tiny, store, tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    out = tmp_path / "export"
    export_embeddings(
        ExportRequest(
            artifact=artifact_dir, data=benchmark_dir, split="test", protocol="live",
            k=K, out=out, steps=T,
        )
    )  # fmt: skip
    exported = load_export(out)
    tiny.append_steps(store, range(12))
    stage = make_stage(graph_model, tiny, store)
    queries = exported.arrays["queries"]
    fed = 0
    for i, (s, r, _, t) in enumerate(queries.tolist()):  # in time order
        while fed < t:
            stage.handle("queries", snapshot(tiny, fed))
            fed += 1
        [(_, reply)] = stage.handle("queries", query(t, s, r))
        assert reply.meta["candidates"] == exported.arrays["candidate_ids"][i].tolist()
        for frame, name in zip(reply.frames, FRAME_NAMES, strict=True):
            np.testing.assert_allclose(frame, exported.arrays[name][i], rtol=1e-6, atol=1e-7)


def test_the_service_module_imports_neither_jax_nor_torch() -> None:
    code = (
        "import json, sys\n"
        "import services.graph.service, services.graph.export\n"
        "print(json.dumps({m: m in sys.modules for m in ('jax', 'jaxlib', 'torch')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "jax": False, "jaxlib": False, "torch": False
    }  # fmt: skip


def test_bench_catchup_replays_ingest_s_backlog_through_the_served_stage(
    tiny, tmp_path: Path, artifact_dir: Path, benchmark_dir: Path
) -> None:
    """`geopol bench catchup` as a process: the queries ingest would send for the last steps,
    answered late by the stage `serve graph` builds, as rates in the ``pipeline`` section."""
    config = served_config(tmp_path, artifact_dir, benchmark_dir)
    store = tiny.open_store(config.store_dir)
    tiny.append_steps(store, range(9))
    expected = sum(len(next_queries("SIM", t - 1, store.snapshot(t - 1), 4)) for t in (5, 6, 7))
    reports = tmp_path / "reports"
    (reports).mkdir()
    (reports / "bench.json").write_text(json.dumps({"pipeline": {"first_forecast_s": 12.0}}))
    done = subprocess.run(
        [sys.executable, "-c", CLI, "bench", "catchup", "--config", str(tmp_path / "config.yaml"),
         "--steps", "3", "--per-step", "4", "--reports", str(reports)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pipeline = json.loads((reports / "bench.json").read_text())["pipeline"]
    assert pipeline["catchup_queries"] == expected > 3
    assert pipeline["catchup_queries_per_s"] > 0 and pipeline["catchup_uncached_queries_per_s"] > 0
    assert pipeline["first_forecast_s"] == 12.0  # the section's other keys are kept
    assert "catch-up" in done.stdout and "backlog catch-up" in (reports / "bench.md").read_text()
    short = subprocess.run(
        [sys.executable, "-c", CLI, "bench", "catchup", "--config", str(tmp_path / "config.yaml"),
         "--steps", "20", "--reports", str(reports)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert short.returncode == 2 and "holds 9 steps" in short.stderr


def test_a_promoted_generation_is_served_from_the_next_step_boundary_on(
    graph_model, tiny, store
) -> None:
    """shared/generations.py: a query of the step in progress keeps the old model; after the
    snapshot that closes it, queries get the new one, with a window rebuilt from the store. A
    generation that fails to load is logged and the old one keeps serving."""
    import dataclasses

    tiny.append_steps(store, range(7))
    newer = dataclasses.replace(graph_model, artifact_id="n" * 64)
    promoted: list[ServedGraph] = []

    def swap() -> ServedGraph | None:
        return promoted.pop() if promoted else None

    window = RecentWindow(tiny.num_entities, tiny.num_relations, tiny.cfg.history, T)
    stage = GraphStage(graph_model, window, store, K, swap=swap)
    for t in range(5):
        stage.handle("queries", snapshot(tiny, t))
    assert stage.handle("queries", query(5, 3, 1))[0][1].meta["graph_artifact"] == (
        graph_model.artifact_id
    )
    fresh = RecentWindow(tiny.num_entities, tiny.num_relations, tiny.cfg.history, T)
    promoted.append(ServedGraph(newer, fresh, None))
    again = stage.handle("queries", query(5, 3, 1, attempt=2))[0][1]
    assert again.meta["graph_artifact"] == graph_model.artifact_id  # not at a step boundary
    with capture_logs() as logs:
        stage.handle("queries", snapshot(tiny, 5))
    assert [e["new"] for e in logs if e["event"] == "generation_swapped"] == ["n" * 64]
    [(_, reply)] = stage.handle("queries", query(6, 3, 1))
    assert reply.meta["graph_artifact"] == "n" * 64 and reply.meta["data_cutoff"] == 5
    candidates, expected = direct_answer(graph_model, tiny, 6, 3, 1)
    assert reply.meta["candidates"] == candidates.tolist()
    for sent, frame in zip(reply.frames, expected, strict=True):
        np.testing.assert_allclose(sent, frame, rtol=1e-6)

    def broken() -> ServedGraph | None:
        raise ArtifactError("graph artifact gen/2: manifest.json is missing")

    stage.swap = broken
    with capture_logs() as logs:
        stage.handle("queries", snapshot(tiny, 6))
    (failed,) = [e for e in logs if e["event"] == "generation_swap_failed"]
    assert "manifest.json is missing" in failed["reason"] and failed["serving"] == "n" * 64
    assert stage.handle("queries", query(7, 3, 1))[0][1].meta["graph_artifact"] == "n" * 64
