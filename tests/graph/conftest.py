"""A tiny benchmark, event store and RE-GCN artifact for the graph-stage tests.

Ten entities, three relations, twelve daily steps (train 0-7, valid 8-9, test 10-11), and a
randomly initialised model (dim 16, history 2): enough to exercise every code path in seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import polars as pl
import pytest

from services.graph import artifact, model
from services.graph.config import ModelConfig, TrainConfig
from services.graph.embeddings import GraphModel
from shared.event_store import QUAD_SCHEMA, EventStore, KeyLabels
from shared.manifest import vocab_sha256

SPLIT_STEPS = {"train": range(0, 8), "valid": range(8, 10), "test": range(10, 12)}


@dataclass(frozen=True)
class TinyWorld:
    """The facts of the tiny benchmark and the ways the tests lay them out on disk."""

    facts: np.ndarray
    cfg: ModelConfig

    @property
    def num_entities(self) -> int:
        return self.cfg.num_entities

    @property
    def num_relations(self) -> int:
        return self.cfg.num_relations

    @property
    def entity_names(self) -> list[str]:
        return [f"e{i}" for i in range(self.num_entities)]

    @property
    def relation_names(self) -> list[str]:
        return [f"r{i}" for i in range(self.num_relations)]

    def triples_at(self, t: int) -> np.ndarray:
        return self.facts[self.facts[:, 3] == t, :3]

    def write_benchmark(self, directory: Path) -> Path:
        """A folder in RE-Net layout (entity2id, relation2id, train/valid/test.txt)."""
        directory.mkdir(parents=True, exist_ok=True)
        for file_name, names in (
            ("entity2id.txt", self.entity_names),
            ("relation2id.txt", self.relation_names),
        ):
            (directory / file_name).write_text("".join(f"{n}\t{i}\n" for i, n in enumerate(names)))
        for split, steps in SPLIT_STEPS.items():
            rows = self.facts[np.isin(self.facts[:, 3], list(steps))]
            lines = "".join(f"{s}\t{r}\t{o}\t{t}\n" for s, r, o, t in rows)
            (directory / f"{split}.txt").write_text(lines)
        return directory

    def open_store(self, root: Path) -> EventStore:
        return EventStore(root, step_minutes=1440, min_free_bytes=0)

    def append_steps(
        self, store: EventStore, steps: Iterable[int], entity_order: list[str] | None = None
    ) -> None:
        """Each step's facts as its own ingest (as live ingest does). Entities are registered in
        ``entity_order`` (default: benchmark id order, so store ids are benchmark ids)."""
        labels = KeyLabels(
            entities=dict.fromkeys(entity_order or self.entity_names),
            relations=dict.fromkeys(self.relation_names),
        )
        for t in steps:
            rows = self.facts[self.facts[:, 3] == t]
            frame = pl.DataFrame(
                {
                    "event_id": [None] * len(rows),
                    "subject": [self.entity_names[s] for s in rows[:, 0]],
                    "relation": [self.relation_names[r] for r in rows[:, 1]],
                    "object": [self.entity_names[o] for o in rows[:, 2]],
                    "t": rows[:, 3].tolist(),
                    "goldstein": [None] * len(rows),
                    "num_mentions": [None] * len(rows),
                    "quad_class": [None] * len(rows),
                },
                schema=QUAD_SCHEMA,
            )
            source = f"tiny/t{t}"
            sha = hashlib.sha256(source.encode()).hexdigest()
            store.append(frame, source=source, source_sha256=sha, labels=labels)


@pytest.fixture(scope="session")
def tiny() -> TinyWorld:
    """Eight random facts per step (repeats possible), seed 0."""
    cfg = ModelConfig(
        num_entities=10, num_relations=3, dim=16, history=2, channels=4, use_static=False
    )
    rng = np.random.default_rng(0)
    steps = np.repeat(np.arange(12), 8)
    s, o = rng.integers(cfg.num_entities, size=(2, len(steps)))
    r = rng.integers(cfg.num_relations, size=len(steps))
    return TinyWorld(np.stack([s, r, o, steps], axis=1).astype(np.int64), cfg)


@pytest.fixture(scope="session")
def benchmark_dir(tmp_path_factory: pytest.TempPathFactory, tiny: TinyWorld) -> Path:
    return tiny.write_benchmark(tmp_path_factory.mktemp("bench") / "TINY")


def random_params(cfg: ModelConfig) -> dict:
    """Parameters of ``model.init_params``'s shapes, drawn with numpy: no XLA compile of the
    initialisers (seconds on a small CPU), and any finite values serve these tests."""
    shapes = jax.eval_shape(lambda key: model.init_params(key, cfg), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(np.float32), shapes)


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory, tiny: TinyWorld) -> Path:
    """An untrained model with random parameters (seed 0), saved as a checked artifact."""
    cfg = tiny.cfg
    directory = tmp_path_factory.mktemp("artifact")
    artifact.save(
        directory,
        model_config=cfg,
        train_config=TrainConfig().to_dict(),
        params=random_params(cfg),
        batch_stats=jax.device_get(model.init_batch_stats(cfg)),
        static_triples=None,
        data=artifact.DataInfo(
            dataset="TINY",
            cutoff_t=7,
            num_entities=cfg.num_entities,
            num_relations=cfg.num_relations,
            entities_sha256=vocab_sha256(tiny.entity_names),
            relations_sha256=vocab_sha256(tiny.relation_names),
            source_sha256={},
        ),
        metrics={},
    )
    return directory


@pytest.fixture(scope="session")
def graph_model(artifact_dir: Path) -> GraphModel:
    return GraphModel.from_artifact(artifact.load(artifact_dir))
