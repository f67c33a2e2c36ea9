"""RE-GCN training loop: one jitted train step, validation filtered MRR, early stopping.

Follows the authors' ``main.py`` (Lee-zix/RE-GCN): an epoch visits every training time step
once in random order (the first is skipped: it has no history), the loss of a step covers all
its facts and their inverses, gradients are clipped to norm 1.0 and Adam (lr 1e-3) adds an L2
term of 1e-5 to the gradient (torch ``weight_decay``). Validation predicts each validation step
from the real previous ``k`` steps (single-step protocol) and ranks all entities for every query,
inverse ones included (``queries``/``ranking``, time-aware filter). Deviations: the best epoch is
chosen on the *filtered* MRR (the original keeps the best raw MRR) and training stops after
``patience`` epochs without improvement (the original runs a fixed number of epochs).

Import this module only after ``jax_env.configure`` (``train.main`` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax
import structlog
from tqdm import tqdm

from services.graph import checkpoint, model, ranking, vocab_growth
from services.graph.artifact import DataInfo, load, save
from services.graph.config import ModelConfig, TrainConfig
from services.graph.queries import step_queries, with_inverse
from services.graph.snapshots import (
    Example,
    SnapshotArrays,
    default_buckets,
    make_example,
    snapshot_arrays,
    split_by_time,
    static_graph,
    training_queries,
)
from shared.manifest import vocab_sha256
from shared.tkg_dataset import TkgDataset

log = structlog.get_logger(__name__)


@dataclass
class TraceCounter:
    """Counts traces (= compilations) per jitted function.

    ``hit`` is called from the Python body of a jitted function, which runs only when JAX traces
    it, i.e. on a cache miss; calls served from the compilation cache never reach it.
    """

    counts: dict[str, int] = field(default_factory=dict)

    def hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree."""

    params: model.Params
    batch_stats: model.BatchStats
    opt_state: optax.OptState
    step: jax.Array


@dataclass(frozen=True)
class Timeline:
    """All snapshots of a benchmark in time order, with the indices of each split's steps."""

    facts: list[np.ndarray]
    arrays: list[SnapshotArrays]
    split_of: list[str]
    buckets: tuple[int, ...]

    def indices(self, split: str) -> list[int]:
        return [i for i, name in enumerate(self.split_of) if name == split]


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: the best validation metrics, per-epoch records and compile counts."""

    best_epoch: int
    best_valid: dict[str, dict[str, float]]
    epochs: list[dict[str, Any]]
    compiles: dict[str, int]
    artifact_dir: Path | None


# --------------------------------------------------------------------------- data


def build_timeline(dataset: TkgDataset, train_cfg: TrainConfig) -> Timeline:
    """Snapshots of train, valid and test together, so valid/test histories reach back into train."""
    facts, split_of = [], []
    seen: dict[int, str] = {}
    for split in ("train", "valid", "test"):
        for snap in split_by_time(dataset.splits[split]):
            t = int(snap[0, 3])
            if t in seen:
                raise ValueError(f"time step {t} is in both {seen[t]} and {split}")
            seen[t] = split
            facts.append(snap)
            split_of.append(split)
    order = np.argsort([int(snap[0, 3]) for snap in facts], kind="stable")
    facts = [facts[i] for i in order]
    split_of = [split_of[i] for i in order]
    arrays = [snapshot_arrays(snap, dataset.num_relations) for snap in facts]
    largest = max(snap.num_edges for snap in arrays)
    buckets = train_cfg.buckets or default_buckets(largest, train_cfg.min_bucket)
    return Timeline(facts, arrays, split_of, buckets)


def data_info(dataset: TkgDataset) -> DataInfo:
    """Cut-off and vocabulary fingerprints recorded in the artifact manifest."""
    return DataInfo(
        dataset=dataset.name,
        cutoff_t=int(dataset.splits["train"][:, 3].max()),
        num_entities=dataset.num_entities,
        num_relations=dataset.num_relations,
        entities_sha256=vocab_sha256(dataset.entity_names),
        relations_sha256=vocab_sha256(dataset.relation_names),
        source_sha256=dict(dataset.source_sha256),
    )


def example_at(
    timeline: Timeline, index: int, queries: tuple[np.ndarray, ...], cfg: ModelConfig
) -> Example:
    """The padded example predicting step ``index`` from the ``cfg.history`` steps before it."""
    history = timeline.arrays[max(0, index - cfg.history) : index]
    return make_example(
        history, queries, cfg.history, cfg.num_entities, cfg.num_relations, timeline.buckets
    )


# --------------------------------------------------------------------------- steps


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Clip the global norm, add the L2 term to the gradient, then Adam: torch's order."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_norm),
        optax.add_decayed_weights(cfg.weight_decay),
        optax.adam(cfg.lr),
    )


def create_state(
    key: jax.Array, cfg: ModelConfig, optimizer: optax.GradientTransformation
) -> TrainState:
    params = model.init_params(key, cfg)
    return TrainState(
        params, model.init_batch_stats(cfg), optimizer.init(params), jnp.zeros((), jnp.int32)
    )


def make_train_step(
    cfg: ModelConfig, optimizer: optax.GradientTransformation, counter: TraceCounter
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """``(state, example, static_graph, key) -> (state, metrics)``, jitted; the state is donated."""

    def train_step(
        state: TrainState, example: Example, graph: jraph.GraphsTuple | None, key: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        counter.hit("train_step")
        grad_fn = jax.value_and_grad(model.loss_fn, has_aux=True)
        (loss, (parts, batch_stats)), grads = grad_fn(
            state.params, state.batch_stats, example, graph, key, cfg
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            **{f"loss_{name}": value for name, value in parts.items()},
            "grad_norm": _global_norm(grads),
        }
        return TrainState(params, batch_stats, opt_state, state.step + 1), metrics

    return jax.jit(train_step, donate_argnums=0)


def _global_norm(tree: model.Params) -> jax.Array:
    """L2 norm of all leaves together (the norm ``clip_by_global_norm`` clips), before clipping."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def make_predict_step(cfg: ModelConfig, counter: TraceCounter) -> Callable[..., jax.Array]:
    """``(params, batch_stats, example, static_graph) -> entity logits``, jitted."""

    def predict_step(
        params: model.Params,
        batch_stats: model.BatchStats,
        example: Example,
        graph: jraph.GraphsTuple | None,
    ) -> jax.Array:
        counter.hit("predict_step")
        return model.predict(params, batch_stats, example, graph, cfg)

    return jax.jit(predict_step)


# --------------------------------------------------------------------------- evaluation


def evaluate(
    predict_step: Callable[..., jax.Array],
    params: model.Params,
    batch_stats: model.BatchStats,
    timeline: Timeline,
    split: str,
    graph: jraph.GraphsTuple | None,
    cfg: ModelConfig,
) -> dict[str, dict[str, float]]:
    """Raw and time-aware filtered MRR/Hits of entity prediction on ``split`` (single step)."""
    raw_parts, filtered_parts = [], []
    for index in timeline.indices(split):
        queries = step_queries(
            with_inverse(timeline.facts[index], cfg.num_relations), cfg.num_relations_total
        )
        example = example_at(
            timeline, index, (queries.subject, queries.relation, queries.gold), cfg
        )
        scores = np.asarray(predict_step(params, batch_stats, example, graph))
        raw, filtered = ranking.count_ranks(
            scores[: len(queries)], queries.gold, queries.filter_rows, queries.filter_cols
        )
        raw_parts.append(raw)
        filtered_parts.append(filtered)
    return {
        "raw": ranking.summarise(ranking.RankCounts.concat(raw_parts)),
        "filtered": ranking.summarise(ranking.RankCounts.concat(filtered_parts)),
    }


# --------------------------------------------------------------------------- loop


def train_and_evaluate(
    dataset: TkgDataset,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    static_triples: np.ndarray | None,
    out_dir: Path | None,
    *,
    progress: bool = True,
    resume: bool = False,
    init: tuple[model.Params, model.BatchStats] | None = None,
) -> TrainResult:
    """Train with early stopping on validation filtered MRR; save the best model to ``out_dir``.

    With ``out_dir`` set, a checkpoint of the whole run is written after every epoch and
    ``resume`` continues from it. ``init`` starts from trained parameters instead of random ones
    (a warm start: fresh optimiser moments; ``train_cfg.init_from`` says where they came from),
    which may lack the rows of entities and relations added since (``vocab_growth.grow``);
    their validation score is the best-so-far that the first epoch must beat, and they are saved
    as the artifact with ``best_epoch`` -1 until an epoch does.
    """
    _check_dataset(dataset, model_cfg, static_triples)
    timeline = build_timeline(dataset, train_cfg)
    graph = static_graph(static_triples, dataset.num_entities)[0] if model_cfg.use_static else None
    counter = TraceCounter()
    optimizer = make_optimizer(train_cfg)
    init_key, train_key = jax.random.split(jax.random.PRNGKey(train_cfg.seed))
    state = create_state(init_key, model_cfg, optimizer)
    train_step = make_train_step(model_cfg, optimizer, counter)
    predict_step = make_predict_step(model_cfg, counter)
    shuffler = np.random.default_rng(train_cfg.seed)
    run = checkpoint.RunProgress(
        model_config=model_cfg.to_dict(),
        train_config=train_cfg.to_dict(),
        data=asdict(data_info(dataset)),
        shuffler_state=shuffler.bit_generator.state,
    )
    if resume:
        if out_dir is None:
            raise ValueError("resume needs the output folder that holds the checkpoint")
        state, run = checkpoint.load(out_dir, state, run)
        shuffler.bit_generator.state = run.shuffler_state
        train_cfg = replace(
            train_cfg,
            init_from=run.train_config.get("init_from", ""),
            init_vocabulary=run.train_config.get("init_vocabulary", {}),
        )
        log.info("resumed", epochs_done=run.epochs_done, best_epoch=run.best_epoch)
    else:
        if init is not None:  # rows of a grown vocabulary come from this run's initialisation
            params = vocab_growth.grow(init[0], jax.device_get(state.params))
            params, batch_stats = jax.tree.map(jnp.asarray, (params, init[1]))
            state = state._replace(params=params, batch_stats=batch_stats)
        if out_dir is not None:  # replaces any older run's checkpoint and marks this one begun
            checkpoint.save(out_dir, state, run)
    if init is not None and not resume:
        valid = evaluate(
            predict_step, state.params, state.batch_stats, timeline, "valid", graph, model_cfg
        )
        run.best_mrr, run.best_valid = valid["filtered"]["mrr"], valid
        log.info("warm_start", init_from=train_cfg.init_from, valid_mrr_filtered=run.best_mrr)
        if out_dir is not None:
            _save(out_dir, state, model_cfg, train_cfg, static_triples, dataset, -1, valid)
            checkpoint.save(out_dir, state, run)
    targets = [i for i in timeline.indices("train") if i > 0]
    log.info(
        "training_start",
        dataset=dataset.name,
        steps_per_epoch=len(targets),
        buckets=list(timeline.buckets),
        config=model_cfg.to_dict(),
    )
    for epoch in range(run.epochs_done, train_cfg.epochs):
        if epoch - run.best_epoch > train_cfg.patience:
            break  # a resumed run that had already stopped early
        order = shuffler.permutation(targets)
        state, record = _run_epoch(
            train_step, state, timeline, order, graph, train_key, model_cfg, epoch, progress
        )
        valid = evaluate(
            predict_step, state.params, state.batch_stats, timeline, "valid", graph, model_cfg
        )
        record.update(
            valid_mrr_filtered=valid["filtered"]["mrr"],
            valid_mrr_raw=valid["raw"]["mrr"],
            compiles=dict(counter.counts),
        )
        run.records.append(record)
        run.epochs_done, run.finished = epoch + 1, False
        run.shuffler_state = shuffler.bit_generator.state
        log.info("epoch_done", **record)
        improved = valid["filtered"]["mrr"] > run.best_mrr
        if improved:
            run.best_mrr, run.best_epoch, run.best_valid = valid["filtered"]["mrr"], epoch, valid
            if out_dir is not None:
                _save(out_dir, state, model_cfg, train_cfg, static_triples, dataset, epoch, valid)
        if out_dir is not None:
            checkpoint.save(out_dir, state, run)
        if not improved and epoch - run.best_epoch >= train_cfg.patience:
            log.info("early_stop", epoch=epoch, best_epoch=run.best_epoch)
            break
    if out_dir is not None:
        run.finished = True
        checkpoint.finish(out_dir, run)
    return TrainResult(run.best_epoch, run.best_valid, run.records, dict(counter.counts), out_dir)


def _run_epoch(
    train_step: Callable[..., tuple[TrainState, dict[str, jax.Array]]],
    state: TrainState,
    timeline: Timeline,
    order: np.ndarray,
    graph: jraph.GraphsTuple | None,
    train_key: jax.Array,
    cfg: ModelConfig,
    epoch: int,
    progress: bool,
) -> tuple[TrainState, dict[str, Any]]:
    """One pass over the training steps in ``order``; returns the mean losses and timings."""
    sums: dict[str, float] = {}
    started = time.perf_counter()
    bar = tqdm(order, desc=f"epoch {epoch}", unit="step", disable=not progress, leave=False)
    for index in bar:
        tick = time.perf_counter()
        example = example_at(
            timeline, int(index), training_queries(timeline.facts[index], cfg.num_relations), cfg
        )
        key = jax.random.fold_in(train_key, state.step)
        state, metrics = train_step(state, example, graph, key)
        values = {name: float(value) for name, value in metrics.items()}  # waits for the step
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        bar.set_postfix(
            loss=f"{values['loss']:.3f}", step_ms=f"{1e3 * (time.perf_counter() - tick):.0f}"
        )
    seconds = time.perf_counter() - started
    record = {name: total / len(order) for name, total in sums.items()}
    return state, {"epoch": epoch, **record, "epoch_s": seconds, "step_s": seconds / len(order)}


def _save(
    out_dir: Path,
    state: TrainState,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    static_triples: np.ndarray | None,
    dataset: TkgDataset,
    epoch: int,
    valid: dict[str, dict[str, float]],
) -> None:
    host = jax.device_get((state.params, state.batch_stats))
    save(
        out_dir,
        model_config=model_cfg,
        train_config=train_cfg.to_dict(),
        params=host[0],
        batch_stats=host[1],
        static_triples=static_triples if model_cfg.use_static else None,
        data=data_info(dataset),
        metrics={"best_epoch": epoch, "valid": valid},
    )
    log.info(
        "artifact_saved",
        path=str(out_dir),
        epoch=epoch,
        valid_mrr_filtered=valid["filtered"]["mrr"],
    )


def _check_dataset(
    dataset: TkgDataset, cfg: ModelConfig, static_triples: np.ndarray | None
) -> None:
    if (dataset.num_entities, dataset.num_relations) != (cfg.num_entities, cfg.num_relations):
        raise ValueError(
            f"config is for {cfg.num_entities} entities / {cfg.num_relations} relations, dataset "
            f"{dataset.name} has {dataset.num_entities} / {dataset.num_relations}"
        )
    if cfg.use_static and static_triples is None:
        raise ValueError("use_static is on but no static (entity-word) triples were given")


def evaluate_artifact(
    directory: Path, dataset: TkgDataset, split: str = "test"
) -> dict[str, dict[str, float]]:
    """Raw and time-aware filtered metrics of a saved model on ``split`` of ``dataset``.

    The manifest is checked against the dataset's sizes before anything large is loaded.
    """
    artifact = load(
        directory, num_entities=dataset.num_entities, num_relations=dataset.num_relations
    )
    cfg = artifact.model_config
    saved = artifact.manifest["train_config"]
    train_cfg = TrainConfig(**{**saved, "buckets": tuple(saved["buckets"])})
    timeline = build_timeline(dataset, train_cfg)
    graph = (
        static_graph(artifact.static_triples, dataset.num_entities)[0] if cfg.use_static else None
    )
    predict_step = make_predict_step(cfg, TraceCounter())
    return evaluate(
        predict_step, artifact.params, artifact.batch_stats, timeline, split, graph, cfg
    )
