"""Write the simulator's ground truth: exact next-step object distributions and the world manifest.

Why: the calibration stage is checked against what the world *really* would do, not against
samples. For slot ``t`` (file ``truth/<DATEADDED>.parquet``) there is one row per
(query, possible object) with columns

    ``t`` (Int64, slot index from the run start), ``subject`` (CAMEO actor code),
    ``relation`` (EventRootCode, two digits), ``object`` (CAMEO actor code), ``prob`` (Float64)

where the queries are every (subject, root relation) that occurs in slot ``t``, and ``prob`` is
``P(object | an event with this subject and root happens in slot t)`` computed in closed form from
the world's state at the end of slot ``t-1``. Objects with zero probability (the subject itself)
are left out; the rest sum to 1 per ``(t, subject, relation)``. The relation level is the root
code because tension steers roots; the leaf code inside a root is independent of the object.

The layout is shared.sim_truth's (its readers, the calibrate stage among them, live there).
Parquet (zstd, no statistics) is written by polars and is byte-stable for a given polars version;
never pickle. ``world.json`` records the seed, parameters, run layout and every actor with its
birth slot so that a run can be described and reproduced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from services.ingest.simulator.world import ROOT_CODES, Actor, StepTruth, WorldParams
from shared.atomic import atomic_write, atomic_write_text
from shared.sim_truth import TRUTH_DIR, TRUTH_SCHEMA

WORLD_MANIFEST = "world.json"
MANIFEST_VERSION = 1


def truth_frame(t: int, truth: StepTruth, actors: Sequence[Actor]) -> pl.DataFrame:
    """Long table of one slot's truth: a row per (query, object with positive probability)."""
    n_objects = truth.probs.shape[1]
    query, obj = np.nonzero(truth.probs > 0.0)
    codes = np.array([a.code for a in actors[:n_objects]], dtype=object)
    roots = np.array(ROOT_CODES, dtype=object)
    return pl.DataFrame(
        {
            "t": np.full(query.size, t, dtype=np.int64),
            "subject": codes[truth.subject[query]].tolist(),
            "relation": roots[truth.root[query]].tolist(),
            "object": codes[obj].tolist(),
            "prob": truth.probs[query, obj],
        },
        schema=TRUTH_SCHEMA,
    )


def write_truth(path: Path, frame: pl.DataFrame) -> Path:
    """Write one slot's truth as parquet (deterministic settings: zstd, no statistics), whole or
    not at all: resolution reads these files while the simulator may still be writing."""
    atomic_write(
        path, lambda handle: frame.write_parquet(handle, compression="zstd", statistics=False)
    )
    return path


def read_truth(directory: Path) -> pl.DataFrame:
    """All truth files of a run as one frame, ordered by slot (for calibration and tests)."""
    files = sorted((directory / TRUTH_DIR).glob("*.parquet"))
    if not files:
        return pl.DataFrame(schema=TRUTH_SCHEMA)
    return pl.concat([pl.read_parquet(f) for f in files])


def manifest(
    params: WorldParams, actors: Sequence[Actor], start: datetime, steps: int, zipped: bool
) -> dict[str, Any]:
    """What ``world.json`` holds: how to regenerate the run and how to read its files."""
    return {
        "generator": "geopol simulate",
        "manifest_version": MANIFEST_VERSION,
        "seed": params.seed,
        "params": params.to_dict(),
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "steps": steps,
        "slot_minutes": 15,
        "zip": zipped,
        "exports": "<DATEADDED>.export.CSV" + (".zip" if zipped else ""),
        "truth": {
            "files": f"{TRUTH_DIR}/<DATEADDED>.parquet",
            "columns": list(TRUTH_SCHEMA),
            "relation_level": "EventRootCode",
            "entity_key": "CAMEO actor code",
            "meaning": "P(object | subject, relation) for slot t given the state after slot t-1",
        },
        "actors": [
            {
                "code": a.code,
                "country": a.country,
                "role": a.role,
                "birth_step": a.birth_step,
                "activity": round(a.activity, 6),
            }
            for a in actors
        ],
    }


def write_manifest(directory: Path, content: dict[str, Any]) -> Path:
    """Write ``world.json`` with sorted keys so identical runs give identical bytes."""
    path = directory / WORLD_MANIFEST
    atomic_write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")
    return path
