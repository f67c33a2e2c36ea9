"""A tiny randomly initialised Llama backbone and a hand-made embedding export for the LLM tests.

The backbone is a real transformers model directory (config.json, safetensors, tokenizer with a
chat template) of two layers and hidden size 32, so every code path runs in seconds. Its
tokenizer is word-level: each word, letter and chat marker is one token, which is all the prompt
needs. The export is written in the shared layout (shared.embedding_export) without JAX: the LLM
tests must never import it.

In the export's "learnable" world the gold option is the only candidate whose newest embedding
points along a fixed direction, so only the graph tokens tell the answer (names are uninformative).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from services.llm.prompt import ANSWER_LEAD, LETTERS, SYSTEM
from shared.embedding_export import QUERY_COLUMNS, write_small_export

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
T, K, D = 2, 6, 8
INIT_RANGE = 0.1
ENTITIES, RELATIONS = 12, 3


def _words() -> list[str]:
    text = " ".join([SYSTEM, ANSWER_LEAD, "Query Subject Relation Option Options feature features"])
    words = {w for w in pre_tokenizers.Whitespace().pre_tokenize_str(text)}
    names = {w for i in range(ENTITIES) for w in ("entity", str(i))} | {
        "relation",
        "inverse",
        "step",
    }
    punct = set("().,:-") | {str(i) for i in range(10)}
    return sorted(
        {w for w, _ in words} | names | punct | set(LETTERS) | {"system", "user", "assistant"}
    )


def write_tiny_backbone(directory: Path, seed: int = 0, hidden: int = 32) -> Path:
    """A two-layer Llama (hidden 32) with a word-level tokenizer and a chat template."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + _words())}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["<|im_end|>"],
        initializer_range=INIT_RANGE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def write_export(
    directory: Path,
    n: int = 240,
    *,
    seed: int = 0,
    learnable: bool = True,
    protocol: str = "tgl-mcq",
    graph_artifact: str = "g" * 64,
) -> Path:
    """An export of ``n`` questions in the shared layout (K=6, T=2, d=8)."""
    rng = np.random.default_rng(seed)
    direction = np.ones(D, dtype=np.float32) / np.sqrt(D)
    candidates = rng.normal(size=(n, K, T, D)).astype(np.float32) * 0.3
    gold = rng.integers(K, size=n)
    if learnable:
        candidates[np.arange(n), gold, -1] += 2.0 * direction
    ids = np.stack([rng.choice(ENTITIES, size=K, replace=False) for _ in range(n)]).astype(np.int64)
    queries = np.stack(
        [
            rng.integers(ENTITIES, size=n),
            rng.integers(2 * RELATIONS, size=n),
            ids[np.arange(n), gold],
            np.sort(rng.integers(20, 30, size=n)),
        ],
        axis=1,
    ).astype(np.int64)
    arrays = {
        "subject": rng.normal(size=(n, T, D)).astype(np.float32),
        "relation": rng.normal(size=(n, D)).astype(np.float32),
        "candidates": candidates,
        "scores": rng.normal(size=(n, K)).astype(np.float32),
        "query": rng.normal(size=(n, D)).astype(np.float32),
        "recurrency": rng.random(size=(n, K)).astype(np.float32),
        "candidate_ids": ids,
        "gold_index": gold.astype(np.int64),
        "queries": queries,
    }
    fields = {
        "protocol": protocol,
        "num_candidates": K,
        "steps": T,
        "dim": D,
        "graph_artifact": graph_artifact,
        "dataset": "TINY",
        "split": "valid",
        "query_columns": list(QUERY_COLUMNS),
        "entity_names": [f"entity {i}" for i in range(ENTITIES)],
        "relation_names": [f"relation {i}" for i in range(RELATIONS)],
        "calendar": {"origin_utc": "2014-01-01T00:00:00+00:00", "step_seconds": 86400},
        "counts": {"exported": n},
    }
    write_small_export(directory, arrays, fields)
    return directory
