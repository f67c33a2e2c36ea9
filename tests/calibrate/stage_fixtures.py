"""What the calibrate stage tests share: a fitted live calibration and SCORES messages."""

from __future__ import annotations

import numpy as np
from synthetic import table_with_temperature, with_misses

from services.calibrate.fit import ProtocolCalibration, fit_protocol
from shared.protocol import Message, MessageType, new_message

K = 10
LLM_ARTIFACT = "l" * 64


def live_calibration(k: int = K) -> ProtocolCalibration:
    table, _ = table_with_temperature(800, k, temperature=2.0, seed=11)
    table.meta.update(llm_artifact=LLM_ARTIFACT)  # the llm artifact scores_message names
    return fit_protocol(with_misses(table, np.full(len(table), 0.35)))


def scores_message(
    subject: int,
    relation: int,
    step: int,
    candidates: list[int] | None = None,
    llm: np.ndarray | None = None,
    dataset: str = "SYNTH",
) -> Message:
    """A SCORES reply as the llm stage sends it: llm and graph scores in candidate order."""
    candidates = candidates if candidates is not None else list(range(100, 100 + K))
    k = len(candidates)
    llm = llm if llm is not None else np.linspace(2.0, -2.0, k)
    return new_message(
        MessageType.SCORES,
        f"{dataset}/t{step}/s{subject}/r{relation}",
        [np.asarray(llm, np.float32), np.linspace(1.0, 0.0, k, dtype=np.float32)],
        meta={
            "dataset": dataset,
            "step": step,
            "subject": subject,
            "relation": relation,
            "candidates": candidates,
            "graph_artifact": "g" * 64,
            "llm_artifact": LLM_ARTIFACT,
            "data_cutoff": step - 1,
            "names": {
                "subject": f"Subject {subject}",
                "relation": f"Relation {relation}",
                "candidates": [f"Entity {c}" for c in candidates],
            },
            "date": "2026-01-02",
            "calendar": {"origin_utc": "2026-01-01T00:00:00+00:00", "step_seconds": 86400},
        },
    )
