"""What the calibrate stage tests share: a fitted live calibration and SCORES messages."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
from synthetic import table_with_temperature, with_misses

from services.calibrate.fit import ProtocolCalibration, fit_protocol
from services.calibrate.ledger import Ledger
from services.calibrate.service import CalibrateStage
from shared.event_store import EventStore
from shared.protocol import Limits, Message, MessageType, new_message

K = 10
LLM_ARTIFACT = "l" * 64


def live_calibration(k: int = K, yardsticks: tuple[str, ...] = ()) -> ProtocolCalibration:
    """A live calibration; with ``yardsticks`` its recurrency column tells the truth as well as
    the LLM's logits do (so the recurrency yardstick is worth comparing with)."""
    table, _ = table_with_temperature(800, k, temperature=2.0, seed=11)
    if yardsticks:
        table = replace(table, recurrency=table.llm / 2.0)
    table.meta.update(llm_artifact=LLM_ARTIFACT)  # the llm artifact scores_message names
    return fit_protocol(with_misses(table, np.full(len(table), 0.35)), yardsticks=yardsticks)


def scores_message(
    subject: int,
    relation: int,
    step: int,
    candidates: list[int] | None = None,
    llm: np.ndarray | None = None,
    dataset: str = "SYNTH",
    recurrency: np.ndarray | None = None,
) -> Message:
    """A SCORES reply as the llm stage sends it: llm and graph scores in candidate order (and
    the recurrency baseline's, when given)."""
    candidates = candidates if candidates is not None else list(range(100, 100 + K))
    k = len(candidates)
    llm = llm if llm is not None else np.linspace(2.0, -2.0, k)
    frames = [np.asarray(llm, np.float32), np.linspace(1.0, 0.0, k, dtype=np.float32)]
    if recurrency is not None:
        frames.append(np.asarray(recurrency, np.float32))
    return new_message(
        MessageType.SCORES,
        f"{dataset}/t{step}/s{subject}/r{relation}",
        frames,
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


def stage_with(
    tmp_path: Path,
    sent: list,
    store: EventStore | None = None,
    k: int = K,
    yardsticks: tuple[str, ...] = (),
) -> CalibrateStage:
    return CalibrateStage(
        live_calibration(k, yardsticks),
        "c" * 64,
        Ledger(tmp_path / "forecasts.sqlite"),
        sent.append,
        Limits(),
        store,
        evidence_facts=2,
        scorecard_file=tmp_path / "scorecard.json",
    )


def hand_store(tmp_path: Path) -> EventStore:
    """Steps 0..3 of A, B, C, D: A met B twice and C once before step 3; step 3 is A's truth."""
    store = EventStore(tmp_path / "store", step_minutes=1440, min_free_bytes=0)
    rows = [
        (1, "A", "meet", "B", 0, "https://news.example.com/1"),
        (2, "C", "meet", "A", 1, None),
        (3, "A", "meet", "B", 2, "https://news.example.com/3"),
        (4, "A", "meet", "C", 3, "https://news.example.com/4"),
        (5, "A", "meet", "D", 3, None),
        (6, "D", "meet", "B", 4, None),
    ]
    cols = list(zip(*rows, strict=True))
    frame = pl.DataFrame(
        {
            "event_id": pl.Series(cols[0], dtype=pl.Int64),
            "subject": cols[1],
            "relation": cols[2],
            "object": cols[3],
            "t": pl.Series(cols[4], dtype=pl.Int64),
            "goldstein": [0.0] * len(rows),
            "num_mentions": [1] * len(rows),
            "quad_class": pl.Series([1] * len(rows), dtype=pl.Int8),
            "source_url": pl.Series(cols[5], dtype=pl.String),
        }
    )
    store.append(frame, source="hand", source_sha256=hashlib.sha256(b"hand").hexdigest())
    return store
