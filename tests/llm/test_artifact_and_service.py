"""The LLM artifact round trip and its refusals, and the llm stage turning EMBEDDINGS into SCORES."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_llm import D, K, T

from services.llm import artifact
from services.llm.backbone import load_backbone, resolve
from services.llm.model import build_scorer, with_lora
from services.llm.questions import Vocabulary, export_batch
from services.llm.service import LlmStage, ServedLlm
from shared.abstention import abstain, read_abstention
from shared.config import LoraSettings, RecipeSettings, load_config
from shared.embedding_export import load_export
from shared.protocol import MessageType, new_message
from shared.runtime import StageRuntime

RECIPE = RecipeSettings(steps=T, query_token=True, letter_tags=True)


@pytest.fixture(scope="module")
def saved(tiny_backbone: Path, tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    export = load_export(tiny_export)
    backbone = load_backbone(resolve(tiny_backbone, tiny_backbone), torch.float32)
    with_lora(backbone, LoraSettings(rank=4, alpha=8, dropout=0.0), 0)
    scorer = build_scorer(RECIPE, backbone, D, 0)
    with torch.no_grad():  # make the saved LoRA and adapters differ from a fresh initialisation
        for param in scorer.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    info = {
        "graph": {"artifact": export.manifest["graph_artifact"], "dim": D, "steps": T},
        "data": {"dataset": "TINY", "questions": 10},
        "options": [4, 6],
        "train": {"curve": [], "best_questions": 0, "settings": {"valid_questions": 1}},
    }
    out = tmp_path_factory.mktemp("llm") / "artifact"
    artifact.save(
        out, scorer, RECIPE, LoraSettings(rank=4, alpha=8), Vocabulary.of_export(export), info
    )
    batch = export_batch(export, Vocabulary.of_export(export), np.arange(4), K, T, seed=0)
    np.save(out.parent / "expected.npy", scorer.score(batch))
    return out


def test_a_saved_artifact_scores_as_it_did_when_saved(
    saved: Path, tiny_backbone: Path, tiny_export: Path
) -> None:
    export = load_export(tiny_export)
    checked = artifact.check(saved)
    assert {
        "lora/adapter_model.safetensors",
        "lora/adapter_config.json",
        "graph_adapters.safetensors",
        "names.json",
    } <= set(checked.manifest["files"])
    scorer = artifact.load(checked, resolve(tiny_backbone, tiny_backbone), torch.float32)
    batch = export_batch(export, checked.vocabulary(), np.arange(4), K, T, seed=0)
    np.testing.assert_allclose(
        scorer.score(batch), np.load(saved.parent / "expected.npy"), rtol=1e-5, atol=1e-6
    )


def test_a_changed_file_or_other_backbone_is_refused_before_loading(
    saved: Path, tmp_path: Path, tiny_backbone: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    (copy / "graph_adapters.safetensors").write_bytes(b"changed")
    with pytest.raises(artifact.LlmArtifactError, match="sha256 of graph_adapters.safetensors"):
        artifact.check(copy)
    checked = artifact.check(saved)
    other = resolve(tiny_backbone, tiny_backbone)
    other = type(other)(other.name, other.directory, "0" * 64)
    with pytest.raises(
        artifact.LlmArtifactError,
        match=r"backbone.weights_sha256 is '.*' in its manifest, but '0{64}' here",
    ):
        artifact.check_fits(checked, other)
    with pytest.raises(
        artifact.LlmArtifactError, match="graph.dim is 8 in its manifest, but 16 here"
    ):
        artifact.check_fits(checked, resolve(tiny_backbone, tiny_backbone), graph_dim=16)
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["prompt_template_version"] = 0
    shutil.rmtree(copy)
    shutil.copytree(saved, copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(artifact.LlmArtifactError, match="prompt_template_version"):
        artifact.check(copy)
    # a file name that leaves the folder is refused before anything outside is read
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["files"]["../../outside"] = {"sha256": "0" * 64}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(artifact.LlmArtifactError, match="not a plain file name"):
        artifact.check(copy)


def embeddings_message(export_dir: Path, row: int, msg_id: str, graph_artifact: str | None = None):
    export = load_export(export_dir)
    a = export.arrays
    frames = [
        np.ascontiguousarray(a[name][row], dtype=np.float32)
        for name in ("subject", "relation", "candidates", "scores", "query")
    ]
    s, r, _, t = (int(v) for v in a["queries"][row])
    meta = {
        "step": t,
        "subject": s,
        "relation": r,
        "candidates": [int(c) for c in a["candidate_ids"][row]],
        "graph_artifact": graph_artifact or export.manifest["graph_artifact"],
        "protocol": "live",
    }
    return new_message(MessageType.EMBEDDINGS, msg_id, frames, meta=meta)


def stage_of(saved: Path, backbone_dir: Path) -> LlmStage:
    checked = artifact.check(saved)
    scorer = artifact.load(checked, resolve(backbone_dir, backbone_dir), torch.float32)
    return LlmStage(scorer, checked.vocabulary(), checked)


def test_the_stage_answers_embeddings_with_scores_in_candidate_order(
    saved: Path, tiny_backbone: Path, tiny_export: Path
) -> None:
    stage = stage_of(saved, tiny_backbone)
    messages = [embeddings_message(tiny_export, row, f"TINY/q{row}") for row in range(3)]
    routes = stage.handle_batch("embeddings", messages)
    assert [socket for socket, _ in routes] == ["scores"] * 3
    for (_, reply), message in zip(routes, messages, strict=True):
        assert reply.type is MessageType.SCORES and reply.id == message.id
        assert reply.frames[0].shape == (K,) and reply.frames[0].dtype == np.float32
        np.testing.assert_array_equal(reply.frames[1], message.frames[3])  # graph scores passed on
        assert reply.meta["llm_artifact"] == artifact.check(saved).artifact_id
        assert reply.meta["candidates"] == message.meta["candidates"]
        # the words the LLM read go along, the candidates' names in candidate order
        vocab = stage.served.newest.vocab
        names = reply.meta["names"]
        assert names["candidates"] == [vocab.entity(c) for c in message.meta["candidates"]]
        assert names["subject"] == vocab.entity(message.meta["subject"])
        assert reply.meta["date"] == vocab.date(message.meta["step"])
    # the graph stage's optional recurrency frame is passed on as the third SCORES frame
    with_recurrency = embeddings_message(tiny_export, 0, "TINY/q0")
    recurrency = np.linspace(0.0, 1.0, K, dtype=np.float32)
    with_recurrency = new_message(
        MessageType.EMBEDDINGS,
        "TINY/q0",  # the same id: the same option order, so the same logits
        [*with_recurrency.frames, recurrency],
        meta=with_recurrency.meta,
    )
    reply = stage.handle("embeddings", with_recurrency)[0][1]
    np.testing.assert_array_equal(reply.frames[2], recurrency)
    assert reply.meta["frames"] == ["llm_scores", "graph_scores", "recurrency_scores"]
    np.testing.assert_allclose(reply.frames[0], routes[0][1].frames[0], rtol=1e-4, atol=1e-5)
    # deterministic: a re-sent id gets the same scores; alone it scores as inside the batch
    again = stage.handle("embeddings", messages[1])[0][1]
    np.testing.assert_allclose(again.frames[0], routes[1][1].frames[0], rtol=1e-4, atol=1e-5)


def test_an_abstention_is_passed_on_unscored_beside_the_scored_batch(
    saved: Path, tiny_backbone: Path, tiny_export: Path
) -> None:
    stage = stage_of(saved, tiny_backbone)
    scored = [embeddings_message(tiny_export, row, f"TINY/q{row}") for row in range(2)]
    query = new_message(MessageType.QUERY, "TINY/new", [], trace_id="trace-new")
    fields = {"dataset": "TINY", "step": 4, "subject": 999, "relation": 0}
    unknown = abstain(query, fields, ["subject"], graph_artifact="g" * 64)
    routes = stage.handle_batch("embeddings", [scored[0], unknown, scored[1]])
    assert [(socket, m.type, m.id) for socket, m in routes] == [
        ("scores", MessageType.SCORES, "TINY/q0"),
        ("scores", MessageType.ABSTAIN, "TINY/new"),
        ("scores", MessageType.SCORES, "TINY/q1"),
    ]
    passed = routes[1][1]
    assert passed.trace_id == "trace-new" and passed.frames == ()
    checked = read_abstention(passed)
    assert (checked.subject, checked.unknown) == (999, ("subject",))
    assert checked.meta["graph_artifact"] == "g" * 64
    assert checked.meta["llm_artifact"] == artifact.check(saved).artifact_id
    alone = stage.handle_batch("embeddings", scored)
    for mixed, plain in zip([routes[0][1], routes[2][1]], [m for _, m in alone], strict=True):
        np.testing.assert_allclose(mixed.frames[0], plain.frames[0], rtol=1e-4, atol=1e-5)


def test_a_bad_frame_is_dead_lettered_while_the_stage_keeps_serving(
    saved: Path, tiny_backbone: Path, tiny_export: Path, tmp_path: Path
) -> None:
    from shared.protocol import encode
    from shared.protocol.codec import as_buffer

    stage = stage_of(saved, tiny_backbone)
    config = load_config(Path("configs/default.yaml"), env={"GEOPOL_RUN_DIR": str(tmp_path)})
    runtime = StageRuntime(
        "llm",
        config,
        stage.handle,
        accepts={"embeddings": frozenset({MessageType.EMBEDDINGS})},
        batch_handler=stage.handle_batch,
        batch_size=8,
    )
    good = embeddings_message(tiny_export, 0, "TINY/good")
    wrong_dim = new_message(
        MessageType.EMBEDDINGS,
        "TINY/wrong-dim",
        [
            np.zeros((T, 5), np.float32),
            np.zeros(5, np.float32),
            np.zeros((K, T, 5), np.float32),
            np.zeros(K, np.float32),
            np.zeros(5, np.float32),
        ],
        meta=dict(good.meta),
    )
    other_graph = embeddings_message(tiny_export, 1, "TINY/other-graph", graph_artifact="x" * 64)
    parts = [[bytes(as_buffer(p)) for p in encode(m)] for m in (good, wrong_dim, other_graph, good)]
    routes = runtime.receive_batch("embeddings", parts)
    assert [m.id for _, m in routes] == ["TINY/good", "TINY/good"]
    letters = [
        json.loads(line)
        for line in (tmp_path / "deadletter" / "llm.jsonl").read_text().splitlines()
    ]
    assert {entry["header"]["id"] for entry in letters} == {"TINY/wrong-dim", "TINY/other-graph"}
    assert any("d=5" in entry["detail"] for entry in letters)


def test_each_message_is_scored_by_the_llm_artifact_of_the_graph_artifact_it_names(
    saved: Path, tiny_backbone: Path, tiny_export: Path
) -> None:
    """Across a retrain's switch (shared/generations.py): the old generation's queries in flight
    are scored by the old llm artifact, the new one's by the new, none refused."""
    first = stage_of(saved, tiny_backbone)
    old = first.served.newest
    new_graph = "n" * 64
    manifest = {**old.artifact.manifest, "graph": {**old.artifact.manifest["graph"]}}
    manifest["graph"]["artifact"] = new_graph
    newer = ServedLlm(old.scorer, old.vocab, artifact.LlmArtifact(saved, manifest))
    looked: list[str] = []

    def find(graph: str) -> ServedLlm | None:
        looked.append(graph)
        return newer if graph == new_graph else None

    stage = LlmStage(old.scorer, old.vocab, old.artifact, find)
    messages = [
        embeddings_message(tiny_export, 0, "TINY/q0"),
        embeddings_message(tiny_export, 1, "TINY/q1", graph_artifact=new_graph),
        embeddings_message(tiny_export, 0, "TINY/q0", graph_artifact=new_graph),
    ]
    replies = [m for _, m in stage.handle_batch("embeddings", messages)]
    assert [r.meta["llm_artifact"] for r in replies] == [
        old.artifact.artifact_id,
        newer.artifact.artifact_id,
        newer.artifact.artifact_id,
    ]
    assert old.artifact.artifact_id != newer.artifact.artifact_id and looked == [new_graph]
    np.testing.assert_allclose(replies[0].frames[0], replies[2].frames[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="graph artifact 'xxx.*no llm artifact of a finished"):
        stage.handle("embeddings", embeddings_message(tiny_export, 0, "TINY/q9", "xxx"))
