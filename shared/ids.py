"""Stable message ids and the exact transport of integer ids inside float32 frames.

An id derived only from the query (dataset, step, subject, relation) lets every stage drop a
message it has already handled and lets the publisher refuse to publish twice (DESIGN.md
invariant 1), across restarts.
"""

from __future__ import annotations

import numpy as np

# float32 represents every integer up to 2**24 exactly; larger vocabularies need another frame.
MAX_EXACT_ID = 2**24


def query_id(dataset: str, step: int, subject: int, relation: int) -> str:
    """The id of the forecast query (subject, relation, ?, step) of a dataset."""
    return f"{dataset}/t{step}/s{subject}/r{relation}"


def ids_to_frame(ids: np.ndarray) -> np.ndarray:
    """Integer ids as a float32 frame, refusing ids float32 cannot hold exactly."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= MAX_EXACT_ID):
        raise ValueError(f"ids must lie in [0, {MAX_EXACT_ID}) to travel as float32 exactly")
    return ids.astype(np.float32)


def frame_to_ids(frame: np.ndarray) -> np.ndarray:
    """Back to int64, refusing a frame that does not hold whole non-negative numbers."""
    ids = frame.astype(np.int64)
    if not np.array_equal(ids, frame) or (ids.size and ids.min() < 0):
        raise ValueError("frame does not hold whole non-negative ids")
    return ids
