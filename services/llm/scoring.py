"""One forward pass per batch of questions -> the K option letters' logits ``[B, K]``.

How the pass is kept cheap (a 135M model on two CPU cores is the default):

- The prompt's prefix (system turn and the start of the user turn) is the same for every question:
  its key/value cache is computed once per weights (once per training step, once at load when
  serving) and broadcast over the batch.
- Questions are right-padded, so no attention mask is needed: causal attention never lets the
  answer position see the padding after it.
- The LM head runs at the answer position only, and only over the K letter rows (the ``vocab``
  loss of the paper's recipe takes the full row, still at that one position).

The graph tokens are spliced into ``inputs_embeds`` at their slot positions; nothing is added to
the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache

from services.llm.adapters import GraphAdapters, bank_index
from services.llm.backbone import Backbone
from services.llm.prompt import ANSWER_LEAD, LETTERS, ChatTemplate, PromptStyle, Slot, render
from services.llm.questions import QuestionBatch

#: Batches are right-padded to a multiple of this many tokens, so a run sees a handful of
#: sequence shapes rather than one per batch: the CPU's bf16 kernels are built per shape, and
#: building one for a backward pass costs tens of seconds.
PAD_MULTIPLE = 32


class LetterTokenError(ValueError):
    """An option letter is not one token after the answer lead in this backbone's tokenizer."""


def letter_token_ids(tokenizer: object) -> list[int]:
    """The token of each letter as it follows "The answer is" (" A", " B", ...), checked to be
    exactly one token appended to the lead's own tokens."""
    lead = tokenizer.encode(ANSWER_LEAD, add_special_tokens=False)  # type: ignore[attr-defined]
    ids = []
    for letter in LETTERS:
        both = tokenizer.encode(f"{ANSWER_LEAD} {letter}", add_special_tokens=False)  # type: ignore[attr-defined]
        if len(both) != len(lead) + 1 or both[: len(lead)] != lead:
            raise LetterTokenError(
                f"option letter {letter!r} after {ANSWER_LEAD!r} is tokens {both[len(lead) :]}, "
                "not one token: this backbone cannot be scored by letter logits"
            )
        ids.append(both[-1])
    return ids


@dataclass(frozen=True)
class EncodedBatch:
    """Token ids (slots hold a placeholder), slot positions and answer positions of a batch."""

    input_ids: torch.Tensor  # [B, L]
    slot_positions: torch.Tensor  # [B, S]
    answer_positions: torch.Tensor  # [B]
    bank_rows: torch.Tensor  # [S]


class OptionScorer(nn.Module):
    """The backbone (with LoRA when training), the graph adapters and the prompt style."""

    def __init__(self, backbone: Backbone, adapters: GraphAdapters | None, style: PromptStyle):
        super().__init__()
        if style.graph_tokens != (adapters is not None):
            raise ValueError("graph tokens need adapters, and adapters need graph tokens")
        if adapters is not None and adapters.hidden != backbone.hidden_size:
            raise ValueError(
                f"adapter output size {adapters.hidden} != backbone hidden size "
                f"{backbone.hidden_size}"
            )
        self.backbone = backbone
        self.lm = backbone.model  # registered, so LoRA weights are this module's parameters
        self.adapters = adapters
        self.style = style
        self.template = ChatTemplate(backbone.tokenizer)
        self.letter_ids = letter_token_ids(backbone.tokenizer)
        pad = backbone.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else backbone.tokenizer.eos_token_id)
        self._prefix: tuple[str, list[int]] | None = None
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._token_cache: dict[str, list[int]] = {}

    @property
    def model(self) -> nn.Module:
        """The causal LM (a PEFT model once LoRA is attached)."""
        return self.lm

    # -- tokens ----------------------------------------------------------------------------
    def encode(self, batch: QuestionBatch) -> EncodedBatch:
        """Render and tokenize every question; text pieces are tokenized once each."""
        rows, slot_pos, answer = [], [], []
        slots: list[Slot] | None = None
        for text in batch.texts:
            rendered = render(text, self.style, self.template)
            self._check_prefix(rendered.prefix)
            ids: list[int] = []
            positions: list[int] = []
            for piece in rendered.body:
                if isinstance(piece, str):
                    ids.extend(self._tokens(piece))
                else:
                    positions.append(len(ids))
                    ids.append(self.pad_id)
            rows.append(ids)
            slot_pos.append(positions)
            answer.append(len(ids) - 1)
            slots = slots or rendered.slots()
        width = -(-max(len(r) for r in rows) // PAD_MULTIPLE) * PAD_MULTIPLE
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
        bank = bank_index(slots or [], self.style.steps, batch.num_options)
        return EncodedBatch(
            input_ids,
            torch.tensor(slot_pos, dtype=torch.long).reshape(len(rows), -1),
            torch.tensor(answer, dtype=torch.long),
            torch.tensor(bank, dtype=torch.long),
        )

    def _tokens(self, text: str) -> list[int]:
        """Token ids of one text piece; most pieces ("Subject feature: ", names) recur."""
        ids = self._token_cache.get(text)
        if ids is None:
            ids = self.backbone.tokenizer.encode(text, add_special_tokens=False)
            self._token_cache[text] = ids
        return ids

    def _check_prefix(self, prefix: str) -> None:
        if self._prefix is None:
            self._prefix = (prefix, self._tokens(prefix))
        elif self._prefix[0] != prefix:
            raise ValueError("prompt prefix differs between questions: it cannot be cached")

    # -- the pass --------------------------------------------------------------------------
    def refresh_prefix_cache(self) -> None:
        """Forget the cached prefix keys/values (call after the weights changed)."""
        self._cache = None

    def _prefix_cache(self, batch_size: int, device: torch.device) -> DynamicCache:
        if self._prefix is None:
            raise RuntimeError("encode a batch before scoring it")
        if self._cache is None or torch.is_grad_enabled():
            ids = torch.tensor([self._prefix[1]], device=device)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            layers = out.cache.layers
            self._cache = [(layer.keys, layer.values) for layer in layers]
        cache = DynamicCache()
        for i, (keys, values) in enumerate(self._cache):
            cache.update(
                keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1), i
            )
        return cache

    def answer_states(
        self, batch: QuestionBatch, encoded: EncodedBatch | None = None
    ) -> torch.Tensor:
        """The last layer's normalised hidden state at each answer position, ``[B, H]``."""
        encoded = encoded or self.encode(batch)
        device = self.backbone.model.device
        dtype = self.backbone.dtype
        embed = self.model.get_input_embeddings()
        x = embed(encoded.input_ids.to(device))
        if self.adapters is not None:
            tensors = [
                torch.as_tensor(np.ascontiguousarray(a), device=device, dtype=torch.float32)
                for a in (
                    batch.subject,
                    batch.relation,
                    batch.candidates,
                    batch.scores,
                    batch.query,
                )
            ]
            bank = self.adapters.bank(*tensors).to(x.dtype)
            tokens = bank[:, encoded.bank_rows.to(device)]
            rows = torch.arange(len(batch), device=device)[:, None].expand_as(
                encoded.slot_positions
            )
            x = x.index_put((rows, encoded.slot_positions.to(device)), tokens)
        cache = self._prefix_cache(len(batch), device)
        decoder = self.model.get_decoder()
        hidden = decoder(inputs_embeds=x.to(dtype), cache=cache, use_cache=True)
        states = hidden.last_hidden_state
        return states[torch.arange(len(batch), device=device), encoded.answer_positions.to(device)]

    def letter_logits(self, states: torch.Tensor, k: int) -> torch.Tensor:
        """``[B, K]`` logits of the first K letters (float32)."""
        head = self.model.get_output_embeddings().weight[self.letter_ids[:k]]
        return (states @ head.T).float()

    def vocab_logits(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, V]`` logits of the whole vocabulary at the answer position (the paper's loss)."""
        return self.model.get_output_embeddings()(states).float()

    def forward(self, batch: QuestionBatch) -> torch.Tensor:
        return self.letter_logits(self.answer_states(batch), batch.num_options)

    @torch.no_grad()
    def score(self, batch: QuestionBatch) -> np.ndarray:
        """Inference: ``[B, K]`` float32 letter logits, the prefix cache reused across calls."""
        return self.forward(batch).cpu().numpy().astype(np.float32)
