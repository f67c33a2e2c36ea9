"""4-bit NF4 (bitsandbytes) on the CPU, where bitsandbytes supports it: the backbone's
projections load as 4-bit layers, score like the full-precision model, and QLoRA training moves
only LoRA and the adapters. bitsandbytes' CPU kernels need every projection's input width to be
at least its quantisation block (64), so the tiny model here has hidden size 64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_llm import D, T, write_tiny_backbone

from services.llm.backbone import load_backbone, resolve
from services.llm.model import build_scorer, with_lora
from services.llm.questions import Vocabulary, export_batch
from services.llm.train import train
from shared.config import LlmTrainConfig, LoraSettings, RecipeSettings
from shared.embedding_export import load_export

bnb = pytest.importorskip("bitsandbytes")
RECIPE = RecipeSettings(steps=T, options=[4])


def _scorer(directory: Path, nf4: bool):
    backbone = load_backbone(resolve(directory, directory), torch.float32, load_in_4bit=nf4)
    with_lora(backbone, LoraSettings(rank=4, alpha=8, dropout=0.0), 0)
    return build_scorer(RECIPE, backbone, D, 0)


def test_nf4_scores_like_full_precision_and_trains_only_lora(
    tmp_path: Path, tiny_export: Path
) -> None:
    directory = write_tiny_backbone(tmp_path / "tiny64", hidden=64)
    export = load_export(tiny_export)
    batch = export_batch(export, Vocabulary.of_export(export), np.arange(32), 4, T, seed=0)
    full, nf4 = _scorer(directory, nf4=False), _scorer(directory, nf4=True)
    quantised = [n for n, m in nf4.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert any(n.endswith("q_proj.base_layer") for n in quantised) and len(quantised) >= 14
    exact, approx = full.score(batch), nf4.score(batch)
    assert np.isfinite(approx).all()
    assert np.corrcoef(exact.ravel(), approx.ravel())[0, 1] > 0.9

    frozen = {n: p.detach().clone() for n, p in nf4.model.named_parameters() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in nf4.named_parameters() if "lora_" in n}
    settings = LlmTrainConfig(
        questions=16, batch=4, warmup_steps=1, valid_questions=8, valid_every=16,
        curve_at=[16], valid_k=4,
    )  # fmt: skip
    train(nf4, RECIPE, settings, export, np.arange(16), export, np.arange(200, 208), progress=False)
    for name, param in nf4.model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), f"4-bit backbone weight {name} changed"
    assert any(
        not torch.equal(p, lora_before[n]) for n, p in nf4.named_parameters() if n in lora_before
    )
