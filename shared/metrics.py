"""Per-stage Prometheus counters: received, processed, rejected by reason, handling latency.

Each stage gets its own registry so several stages (or tests) can live in one process without
clashing, and serves it on its own loopback port for ``make status`` and any Prometheus.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class StageMetrics:
    """The counters every stage keeps; ``stage`` is a label so dashboards can merge stages."""

    stage: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = ["stage"]
        self._received = Counter(
            "geopol_messages_received", "Messages received", labels, registry=self.registry
        )
        self._processed = Counter(
            "geopol_messages_processed",
            "Messages handled successfully",
            labels,
            registry=self.registry,
        )
        self._rejected = Counter(
            "geopol_messages_rejected",
            "Messages refused, by reason",
            [*labels, "reason"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "geopol_handle_seconds",
            "Handler latency per message",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._heartbeat = Gauge(
            "geopol_heartbeat_timestamp_seconds",
            "Unix time of the stage loop's last heartbeat",
            labels,
            registry=self.registry,
        )
        # Which process serves this port: a supervisor can tell its own child from another
        # program that holds the port (shared/pipeline.py).
        Gauge(
            "geopol_process_id",
            "Process id of the stage process serving these metrics",
            labels,
            registry=self.registry,
        ).labels(self.stage).set(os.getpid())

    def received(self) -> None:
        self._received.labels(self.stage).inc()

    def processed(self, seconds: float) -> None:
        self._processed.labels(self.stage).inc()
        self._latency.labels(self.stage).observe(seconds)

    def rejected(self, reason: str) -> None:
        self._rejected.labels(self.stage, reason).inc()

    def heartbeat(self) -> None:
        self._heartbeat.labels(self.stage).set(time.time())

    def snapshot(self) -> dict[str, float | dict[str, float]]:
        """Current values as plain numbers (for heartbeat messages, status and tests)."""
        rejected = {
            sample.labels["reason"]: sample.value
            for metric in self._rejected.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        }
        return {
            "received": self._total("geopol_messages_received_total"),
            "processed": self._total("geopol_messages_processed_total"),
            "rejected": rejected,
        }

    def _total(self, name: str) -> float:
        return self.registry.get_sample_value(name, {"stage": self.stage}) or 0.0

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Serve ``/metrics`` on a loopback port; returns the server so it can be shut down."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
