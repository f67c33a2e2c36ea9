"""What the graph stage hands the LLM stage for one query: the per-query frame layout.

One EMBEDDINGS message (and one row of the embedding export) carries, for a query
``(s, r, ?, t)`` with K candidates, T historical steps and graph dimension d, these float32
frames in this order::

    subject     [T, d]     the subject's embedding after each of the last T steps, oldest first
    relation    [d]        the relation's embedding from the newest encoding
    candidates  [K, T, d]  each candidate's T-step embeddings, in candidate order
    scores      [K]        the graph model's logits of the candidates (RE-GCN Eq. 9)
    query       [d]        the decoder's query vector for (s, r): scores == query @ tanh(newest)^T,
                           where newest = candidates[:, -1], so the LLM can compare it with each
                           option itself
    recurrency  [K]        optional, last: the tuned recurrency baseline's scores of the
                           candidates (the live graph stage sends it; the calibrator stacks it)

and the candidates' entity ids in the header's ``meta["candidates"]`` (K integers). Both stages
build and read frames through this module only, so a change of layout is a change here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

#: Frame names in wire order (the five every query carries), and the optional last one.
FRAME_NAMES = ("subject", "relation", "candidates", "scores", "query")
OPTIONAL_FRAME = "recurrency"


#: The header fields an EMBEDDINGS message carries (the graph stage sets exactly these, checked
#: and bounded) and the llm stage carries on into SCORES: a reply never copies anything else.
META_FIELDS = (
    "dataset",
    "step",
    "subject",
    "relation",
    "attempt",
    "protocol",
    "candidates",
    "graph_artifact",
    "data_cutoff",
)


class FrameLayoutError(ValueError):
    """Frames that do not fit the per-query layout; the message names the frame and both shapes."""


class QueryFrames(NamedTuple):
    """The float32 frames of one query, in wire order (see the module docstring)."""

    subject: np.ndarray
    relation: np.ndarray
    candidates: np.ndarray
    scores: np.ndarray
    query: np.ndarray

    @property
    def num_candidates(self) -> int:
        return int(self.candidates.shape[0])

    @property
    def steps(self) -> int:
        return int(self.subject.shape[0])


def check_frames(
    frames: Sequence[np.ndarray], steps: int | None = None, dim: int | None = None
) -> QueryFrames:
    """The frames as :class:`QueryFrames`, refused unless every shape agrees with the others and
    with ``steps`` (T) and ``dim`` (d) when given. Finiteness and dtype are the codec's checks."""
    if len(frames) not in (len(FRAME_NAMES), len(FRAME_NAMES) + 1):
        raise FrameLayoutError(
            f"a query carries {len(FRAME_NAMES)} frames {FRAME_NAMES} and optionally "
            f"{OPTIONAL_FRAME!r}, got {len(frames)}"
        )
    subject = frames[0]
    if subject.ndim != 2:
        raise FrameLayoutError(f"frame 'subject' must be [T, d], got {list(subject.shape)}")
    t, d = subject.shape
    if steps is not None and t != steps:
        raise FrameLayoutError(f"frame 'subject' has T={t} steps, the model expects T={steps}")
    if dim is not None and d != dim:
        raise FrameLayoutError(f"frame 'subject' has d={d}, the model expects graph dim d={dim}")
    k = frames[2].shape[0] if frames[2].ndim == 3 else -1
    expected = {"relation": (d,), "candidates": (k, t, d), "scores": (k,), "query": (d,)}
    for name, frame in zip(FRAME_NAMES[1:], frames[1 : len(FRAME_NAMES)], strict=True):
        if tuple(frame.shape) != expected[name] or k < 1:
            want = [("K" if v == -1 else v) for v in expected[name]]
            raise FrameLayoutError(f"frame {name!r} must be {want}, got {list(frame.shape)}")
    if len(frames) > len(FRAME_NAMES) and tuple(frames[-1].shape) != (k,):
        raise FrameLayoutError(
            f"frame {OPTIONAL_FRAME!r} must be ['K'] (K={k}), got {list(frames[-1].shape)}"
        )
    return QueryFrames(*frames[: len(FRAME_NAMES)])


def recurrency_scores(frames: Sequence[np.ndarray]) -> np.ndarray | None:
    """The optional recurrency frame of checked query frames, or None when it was not sent."""
    return frames[len(FRAME_NAMES)] if len(frames) > len(FRAME_NAMES) else None


def candidate_ids(meta: Mapping[str, Any], k: int) -> np.ndarray:
    """The K candidate entity ids of a message's ``meta["candidates"]``, checked."""
    ids = meta.get("candidates")
    if (
        not isinstance(ids, list)
        or len(ids) != k
        or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
    ):
        raise FrameLayoutError(
            f"meta 'candidates' must list {k} non-negative entity ids, got {ids!r:.200}"
        )
    return np.asarray(ids, dtype=np.int64)
