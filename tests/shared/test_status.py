"""`geopol status` classification from real metrics text."""

from __future__ import annotations

from prometheus_client import generate_latest

from shared.config import StageConfig
from shared.metrics import StageMetrics
from shared.status import classify


def _text(metrics: StageMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_up_stale_down_and_counts():
    m = StageMetrics("graph")
    m.received()
    m.received()
    m.processed(0.01)
    m.rejected("non_finite")
    m.heartbeat()
    cfg = StageConfig(metrics_port=9999, heartbeat_s=1.0)
    text = _text(m)
    now = m.registry.get_sample_value("geopol_heartbeat_timestamp_seconds", {"stage": "graph"})
    up = classify("graph", cfg, text, now + 0.5)
    assert (up.state, up.received, up.processed, up.rejected) == ("up", 2, 1, 1)
    assert classify("graph", cfg, text, now + 10).state == "stale"
    assert classify("graph", cfg, None, now).state == "down"
    assert classify("graph", StageConfig(), None, now).state == "no-metrics"
