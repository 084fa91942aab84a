"""Prometheus metrics of one stream worker process, served on ``metrics.worker_port`` (0 = off).

The exact pipeline counters (events accepted, duplicates, rejections by reason) and the consumer
lag live in Redis, committed with the KPI state, and every API process exposes them; this port
adds what only the process itself knows: that it is up (Prometheus' ``up``), and how many records
and batches it has taken, so throughput per worker and a stalled worker show.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from services.settings import Settings


class WorkerMetrics:
    """The counters of one worker process, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records = Counter(
            "crm_pulse_worker_records",
            "Records of crm.events taken by this worker process (accepted, duplicate or rejected)",
            registry=self.registry,
        )
        self.batches = Counter(
            "crm_pulse_worker_batches", "Batches taken by this worker process", registry=self.registry
        )
        self.last_batch = Gauge(
            "crm_pulse_worker_last_batch_timestamp_seconds",
            "Unix time of the last batch this worker process took (0 before the first)",
            registry=self.registry,
        )
        self._serving = False

    def observe_batch(self, records: int) -> None:
        self.records.inc(records)
        self.batches.inc()
        self.last_batch.set(time.time())

    def serve(self, settings: Settings) -> None:
        """Serve /metrics in a background thread once (port 0: not at all)."""
        if settings.metrics.worker_port and not self._serving:
            start_http_server(settings.metrics.worker_port, addr=settings.metrics.worker_host, registry=self.registry)
            self._serving = True
