"""``geopol status``: each stage's liveness and counters, read from its Prometheus endpoint.

A stage is ``up`` when its loop's heartbeat is recent, ``stale`` when the process answers but
its loop has stopped beating (a stuck handler), and ``down`` when nothing answers.
"""

from __future__ import annotations

import argparse
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from shared.config import DEFAULT_CONFIG, StageConfig, load_config


@dataclass(frozen=True)
class StageStatus:
    stage: str
    state: str  # up | stale | down | no-metrics
    received: float = 0.0
    processed: float = 0.0
    rejected: float = 0.0
    heartbeat_age_s: float | None = None


def parse_metrics(text: str) -> dict[str, float]:
    """Sum each sample name over its labels (one stage per endpoint)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def classify(stage: str, cfg: StageConfig, text: str | None, now: float) -> StageStatus:
    """Turn one scrape (or its absence) into a status; pure, for tests."""
    if cfg.metrics_port is None:
        return StageStatus(stage, "no-metrics")
    if text is None:
        return StageStatus(stage, "down")
    m = parse_metrics(text)
    beat = m.get("geopol_heartbeat_timestamp_seconds")
    age = now - beat if beat else None
    state = "up" if age is not None and age <= 3 * cfg.heartbeat_s else "stale"
    return StageStatus(
        stage,
        state,
        m.get("geopol_messages_received_total", 0.0),
        m.get("geopol_messages_processed_total", 0.0),
        m.get("geopol_messages_rejected_total", 0.0),
        age,
    )


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geopol status", description=__doc__)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline config YAML")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    rows = [
        classify(name, cfg, _scrape(cfg.metrics_port) if cfg.metrics_port else None, time.time())
        for name, cfg in config.stages.items()
    ]
    print(
        f"{'stage':<10} {'state':<10} {'received':>9} {'processed':>9} {'rejected':>9}  heartbeat"
    )
    for r in rows:
        age = f"{r.heartbeat_age_s:.1f}s ago" if r.heartbeat_age_s is not None else "-"
        print(
            f"{r.stage:<10} {r.state:<10} {r.received:>9.0f} {r.processed:>9.0f} "
            f"{r.rejected:>9.0f}  {age}"
        )
    return 0 if all(r.state == "up" for r in rows) else 1
