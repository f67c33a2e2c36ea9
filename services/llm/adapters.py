"""Graph embeddings -> LLM token embeddings (TGL-LLM's entity and relation adapters, z_f).

Shapes: graph dim ``d`` (the graph artifact's), LLM hidden size ``H`` (the backbone's).

- entity adapter   ``[..., d] -> [..., H]``: Linear(d, 2d) -> GELU -> Linear(2d, H) (the authors'
  ``Linear -> GELU -> Linear``); it maps every T-step embedding of the subject and of each option;
- relation adapter ``[d] -> [H]``, the same shape, for the relation embedding the graph sends;
- query adapter    ``[d] -> [H]`` (variant b): RE-GCN's decoder query vector for (s, r);
- score adapter    ``[1] -> [H]`` (variant d, ``tgl-llm+score``): each option's graph logit,
  standardised over the question's K options first so its scale means the same in every query;
- ``feature``      z_f ``[H]``: one learned vector placed before every group of graph tokens.

``letter_tags`` (ours) adds to every token of option j the backbone's own embedding of j's letter
token (" A", " B", ...): a head at the answer position that attends to the right option's tokens
then carries that letter's embedding, which the (tied) LM head reads as that letter.

``match_norm`` rescales every token to the root-mean-square norm of the backbone's own token
embeddings (an untrained adapter's outputs are far smaller or larger than the tokens the model was
trained on, so the model at first reads them as noise); the paper's recipe leaves it off.
"""

from __future__ import annotations

import torch
from torch import nn

from services.llm.prompt import Slot


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, 2 * d_in), nn.GELU(), nn.Linear(2 * d_in, d_out))


class GraphAdapters(nn.Module):
    """Every trainable piece between the graph frames and the backbone's input embeddings."""

    def __init__(
        self,
        graph_dim: int,
        hidden: int,
        *,
        query_token: bool = False,
        score_tokens: bool = False,
        token_norm: float | None = None,
        letter_embeddings: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.graph_dim, self.hidden = graph_dim, hidden
        self.entity = _mlp(graph_dim, hidden)
        self.relation = _mlp(graph_dim, hidden)
        self.query = _mlp(graph_dim, hidden) if query_token else None
        self.score = (
            nn.Sequential(nn.Linear(1, hidden), nn.GELU(), nn.Linear(hidden, hidden))
            if score_tokens
            else None
        )
        self.feature = nn.Parameter(torch.randn(hidden) * 0.02)
        self.token_norm = token_norm
        # [10, H] letter-token embeddings of the frozen backbone: derived, so not saved
        self.register_buffer("letters", letter_embeddings, persistent=False)

    def bank(
        self,
        subject: torch.Tensor,
        relation: torch.Tensor,
        candidates: torch.Tensor,
        scores: torch.Tensor,
        query: torch.Tensor,
    ) -> torch.Tensor:
        """Every graph token a prompt may use, ``[B, M, H]`` in :func:`bank_index` order:
        z_f, the subject's T steps, the relation, the query, each option's T steps, each score."""
        if subject.shape[-1] != self.graph_dim:
            raise ValueError(
                f"graph frames have d={subject.shape[-1]}, the adapters were built for "
                f"d={self.graph_dim}"
            )
        b, k, t, _ = candidates.shape
        parts = [
            self.feature.expand(b, 1, -1),
            self.entity(subject),
            self.relation(relation)[:, None],
            (
                self.query(query)
                if self.query is not None
                else torch.zeros_like(self.feature).expand(b, -1)
            )[:, None],
            self.entity(candidates).reshape(b, k * t, -1),
        ]
        if self.score is not None:
            z = (scores - scores.mean(1, keepdim=True)) / (scores.std(1, keepdim=True) + 1e-6)
            parts.append(self.score(z[..., None]))
        tokens = torch.cat(parts, dim=1)
        if self.token_norm is not None:
            rms = tokens.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
            tokens = tokens / rms * (self.token_norm / self.hidden**0.5)
        if self.letters is not None:
            tokens = tokens + self._letter_tags(b, k, t, tokens.shape[1]).to(tokens.dtype)
        return tokens

    def _letter_tags(self, b: int, k: int, t: int, m: int) -> torch.Tensor:
        """``[1, M, H]``: option j's letter embedding on each of j's tokens, zero elsewhere."""
        first = 1 + t + 2
        tags = torch.zeros(1, m, self.hidden, device=self.letters.device)
        tags[0, first : first + k * t] = self.letters[:k].repeat_interleave(t, dim=0)
        if self.score is not None:
            tags[0, first + k * t :] = self.letters[:k]
        return tags


def bank_index(slots: list[Slot], steps: int, k: int) -> list[int]:
    """Each slot's row in :meth:`GraphAdapters.bank` (``steps`` = T, ``k`` = options)."""
    first_option = 1 + steps + 2
    first_score = first_option + k * steps
    rows = []
    for slot in slots:
        if slot.kind == "feature":
            rows.append(0)
        elif slot.kind == "subject":
            rows.append(1 + slot.step)
        elif slot.kind == "relation":
            rows.append(1 + steps)
        elif slot.kind == "query":
            rows.append(2 + steps)
        elif slot.kind == "option":
            rows.append(first_option + slot.option * steps + slot.step)
        elif slot.kind == "score":
            rows.append(first_score + slot.option)
        else:
            raise ValueError(f"unknown slot kind {slot.kind!r}")
    return rows
