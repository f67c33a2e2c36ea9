"""Assemble the trainable TGL-LLM: backbone + LoRA + graph adapters + prompt style, from a recipe.

Training and loading an artifact build the model the same way, so what was trained is what is
served. LoRA (PEFT) wraps the frozen backbone; the graph adapters and z_f are a separate module
with their own learning rate.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from services.llm.adapters import GraphAdapters
from services.llm.backbone import Backbone
from services.llm.prompt import PromptStyle
from services.llm.scoring import OptionScorer, letter_token_ids
from shared.config import LoraSettings, RecipeSettings


def prompt_style(recipe: RecipeSettings) -> PromptStyle:
    return PromptStyle(
        layout=recipe.layout,
        graph_tokens=recipe.graph_tokens,
        query_token=recipe.query_token,
        score_tokens=recipe.score_tokens,
        steps=recipe.steps,
        facts=recipe.facts,
    )


def embedding_norm(backbone: Backbone) -> float:
    """Root-mean-square L2 norm of the backbone's token embeddings (the scale graph tokens match
    under ``match_norm``)."""
    weight = backbone.model.get_input_embeddings().weight.detach().float()
    return float(weight.pow(2).sum(-1).mean().sqrt())


def letter_embeddings(backbone: Backbone) -> torch.Tensor:
    """``[10, H]`` float32 input embeddings of the option letters' tokens (frozen)."""
    ids = torch.tensor(letter_token_ids(backbone.tokenizer))
    return backbone.model.get_input_embeddings().weight[ids].detach().float().clone()


def build_adapters(
    recipe: RecipeSettings, backbone: Backbone, graph_dim: int
) -> GraphAdapters | None:
    if not recipe.graph_tokens:
        return None
    return GraphAdapters(
        graph_dim,
        backbone.hidden_size,
        query_token=recipe.query_token,
        score_tokens=recipe.score_tokens,
        token_norm=embedding_norm(backbone) if recipe.match_norm else None,
        letter_embeddings=letter_embeddings(backbone) if recipe.letter_tags else None,
    )


def lora_config(settings: LoraSettings) -> LoraConfig:
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def with_lora(backbone: Backbone, settings: LoraSettings, seed: int) -> Backbone:
    """A fresh LoRA on the frozen backbone (seeded initialisation)."""
    torch.manual_seed(seed)
    backbone.model = get_peft_model(backbone.model, lora_config(settings))
    return backbone


def with_saved_lora(backbone: Backbone, adapter_dir: str) -> Backbone:
    """The backbone with a saved PEFT adapter attached, for inference."""
    backbone.model = PeftModel.from_pretrained(backbone.model, adapter_dir, is_trainable=False)
    backbone.model.eval()
    return backbone


def build_scorer(
    recipe: RecipeSettings, backbone: Backbone, graph_dim: int, seed: int
) -> OptionScorer:
    torch.manual_seed(seed)
    adapters = build_adapters(recipe, backbone, graph_dim)
    return OptionScorer(backbone, adapters, prompt_style(recipe))
