"""``geopol bench catchup``: how fast the graph stage answers a backlog of late queries.

After hours of downtime, ingest closes a backlog of steps at once and every query reaches the
graph behind its live window. This loads the served graph stage of a config (its artifact, event
store and training folder, exactly as ``geopol serve graph`` does), moves its window to the
store's last step, then answers the queries ingest would have sent for the ``--steps`` steps
before it (the most active (subject, relation) pairs of the step before each, at most
``--per-step``),
through the stage's own handler, without sockets (the queries are ingest's own: the same
``next_queries`` and ``query_message``). ``catchup_queries_per_s`` is that rate;
``catchup_uncached_queries_per_s`` the same with the late-step cache off (one store rebuild per
query, as before the cache), on the first step's queries only. Writes the ``pipeline`` keys it
measures into reports/bench.json; the other ``pipeline`` keys are kept.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.graph import jax_env
from services.graph.artifact import ArtifactError
from shared.bench import machine, report
from shared.config import DEFAULT_CONFIG, ConfigError, load_config
from shared.event_store import EventStore, StoreError
from shared.journal import WorkItem
from shared.log import configure_logging
from shared.work_messages import next_queries, query_message

if TYPE_CHECKING:
    from services.graph.service import GraphStage

COMMAND = "geopol bench catchup"


def backlog(store: EventStore, dataset: str, steps: int, per_step: int) -> list[WorkItem]:
    """The queries ingest sends for the ``steps`` steps before the store's last one: for step t,
    ``next_queries`` of step t - 1's facts, at most ``per_step``."""
    held = store.steps()
    if len(held) < steps + 1:
        raise ValueError(
            f"event store {store.root} holds {len(held)} steps; a backlog of {steps} needs "
            f"{steps + 1} (run `make run` first, or lower --steps)"
        )
    return [
        item
        for t in held[-steps - 1 : -1]
        for item in next_queries(dataset, t - 1, store.snapshot(t - 1), per_step)
    ]


def _rate(stage: GraphStage, queries: list[WorkItem]) -> float:
    start = time.perf_counter()
    for item in queries:
        stage.handle("queries", query_message(item))
    return len(queries) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument("--steps", type=int, default=6, help="backlog steps (default 6)")
    parser.add_argument("--per-step", type=int, default=50, help="queries per step (default 50)")
    parser.add_argument("--reports", type=Path, default=report.REPORTS_DIR, help="reports folder")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        jax_env.configure(config.graph.mem_fraction)
        configure_logging("graph", "warning", config.logging.format)
        from services.graph.service import build_stage  # JAX starts here, after configure

        stage = build_stage(config)
        dataset = config.ingest.dataset
        queries = backlog(stage.store, dataset, args.steps, args.per_step)
        last = stage.store.steps()[-1]
        stage.window.rebuild(stage.store, before=last + 1)  # the live window at the last step
        first = [item for item in queries if item.step == queries[0].step]
        cache_size, stage.late_steps = stage.late_steps, 0
        _rate(stage, first[:1])  # JAX compiles on the first answer: not part of either rate
        uncached = _rate(stage, first)
        stage.late_steps = cache_size  # nothing was cached while it was 0
        cached = _rate(stage, queries)
    except (ArtifactError, ConfigError, StoreError, OSError, ValueError) as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 2
    values = {
        **report.load(args.reports / "bench.json").get("pipeline", {}),
        "catchup_queries_per_s": round(cached, 2),
        "catchup_uncached_queries_per_s": round(uncached, 2),
        "catchup_queries": len(queries),
    }
    host = machine.record(args.reports)
    markdown = (
        "## pipeline: backlog catch-up\n\n"
        f"Reproduce: `{COMMAND} --steps {args.steps} --per-step {args.per_step}` after `make run`. "
        f"The graph stage of {dataset} answers {len(queries)} late queries over {args.steps} "
        f"steps; CPU: {host['cpu']}, {host['cores']} cores.\n\n"
        "| queries/s, late-step cache | queries/s, a rebuild per query |\n|---|---|\n"
        f"| {values['catchup_queries_per_s']} | {values['catchup_uncached_queries_per_s']} |"
    )
    path = report.write_section("pipeline", values, markdown, args.reports)
    print(
        f"catch-up: {cached:.1f} queries/s with the late-step cache, {uncached:.1f} without "
        f"({len(queries)} queries over {args.steps} steps) -> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
