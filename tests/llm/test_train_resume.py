"""A cut LLM training run resumed from its checkpoint equals the run that was never cut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_llm import D, K, T

from services.llm import checkpoint as llm_checkpoint
from services.llm.backbone import load_backbone, resolve
from services.llm.model import build_scorer, with_lora
from services.llm.scoring import OptionScorer
from services.llm.train import train
from shared.config import LlmTrainConfig, LoraSettings, RecipeSettings
from shared.embedding_export import gold_rows, load_export

# dropout and a K mix, so the torch and numpy generators both shape the run
RECIPE = RecipeSettings(steps=T, options=[4, K], lr=1e-2, adapter_lr=1e-2)
SETTINGS = LlmTrainConfig(
    questions=48, batch=4, warmup_steps=2, valid_questions=8, valid_every=16, valid_k=4, patience=9
)


def _scorer(backbone_dir: Path) -> OptionScorer:
    backbone = load_backbone(resolve(backbone_dir, backbone_dir), torch.float32)
    with_lora(backbone, LoraSettings(rank=4, alpha=8, dropout=0.1), 0)
    return build_scorer(RECIPE, backbone, D, 0)


def _train(backbone_dir: Path, export_dir: Path, checkpoint: llm_checkpoint.Checkpoint | None):
    export = load_export(export_dir)
    rows = gold_rows(export)
    torch.manual_seed(0)
    scorer = _scorer(backbone_dir)
    result = train(
        scorer,
        RECIPE,
        SETTINGS,
        export,
        rows[: SETTINGS.questions],
        export,
        rows[-SETTINGS.valid_questions :],
        progress=False,
        checkpoint=checkpoint,
        resume=llm_checkpoint.load(checkpoint) if checkpoint is not None else None,
    )
    return scorer, result


def _trained_weights(scorer: OptionScorer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in scorer.named_parameters() if p.requires_grad}


class Cut(Exception):
    """The process 'dies' here, just after a checkpoint was written."""


def test_a_run_cut_after_a_checkpoint_resumes_to_the_same_weights_and_curve(
    tiny_backbone: Path, tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, whole_result = _train(tiny_backbone, tiny_export, None)

    checkpoint = llm_checkpoint.Checkpoint.beside(tmp_path / "artifact", {"run": "test"})
    real_save = llm_checkpoint.save

    def save_then_die(*args, **kwargs) -> None:
        real_save(*args, **kwargs)
        raise Cut

    monkeypatch.setattr(llm_checkpoint, "save", save_then_die)
    with pytest.raises(Cut):
        _train(tiny_backbone, tiny_export, checkpoint)
    monkeypatch.setattr(llm_checkpoint, "save", real_save)
    progress = json.loads((checkpoint.folder / "progress.json").read_text())
    assert progress["position"]["seen"] == 16 and progress["position"]["marks"] == [32, 48]

    resumed, resumed_result = _train(tiny_backbone, tiny_export, checkpoint)
    assert resumed_result.resumed_from == 16
    assert resumed_result.questions_seen == whole_result.questions_seen == 48
    assert [p["train_questions"] for p in resumed_result.curve] == [16, 32, 48]
    assert [p["acc"] for p in resumed_result.curve] == [p["acc"] for p in whole_result.curve]
    assert resumed_result.best_questions == whole_result.best_questions
    got, want = _trained_weights(resumed), _trained_weights(whole)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)
    # the state file of the last mark replaced the earlier ones
    assert [p.name for p in checkpoint.folder.glob("state-*")] == ["state-000048.safetensors"]


def test_a_checkpoint_of_another_run_or_a_changed_state_file_is_refused(
    tiny_backbone: Path, tiny_export: Path, tmp_path: Path
) -> None:
    checkpoint = llm_checkpoint.Checkpoint.beside(tmp_path / "artifact", {"settings": {"lr": 1}})
    scorer, _ = _train(tiny_backbone, tiny_export, None)
    optimizer = torch.optim.AdamW([p for p in scorer.parameters() if p.requires_grad])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    state = _trained_weights(scorer)
    llm_checkpoint.save(
        checkpoint, llm_checkpoint.LoopPosition(seen=8), state, None, optimizer, schedule
    )
    assert llm_checkpoint.load(checkpoint).position.seen == 8

    other = llm_checkpoint.Checkpoint(checkpoint.folder, {"settings": {"lr": 2}})
    with pytest.raises(llm_checkpoint.LlmCheckpointError, match=r"another run.*settings.*--fresh"):
        llm_checkpoint.load(other)

    state_file = checkpoint.folder / "state-000008.safetensors"
    payload = bytearray(state_file.read_bytes())
    payload[-1] ^= 0xFF
    state_file.write_bytes(bytes(payload))
    with pytest.raises(llm_checkpoint.LlmCheckpointError, match="sha256 of state-000008"):
        llm_checkpoint.load(checkpoint)
    assert llm_checkpoint.load(llm_checkpoint.Checkpoint(tmp_path / "none", {})) is None
