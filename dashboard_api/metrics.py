"""Prometheus metrics of one API process, in its own registry.

The stream worker's exact counters (events processed, duplicates, rejections by reason) and
consumer lag live in Redis, written together with the KPI state. They are read at scrape time
and exposed as they are, so every API process reports the same exact numbers; counters of the
API itself (pushes, WebSocket clients, ingest) are per process.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from services.schemas.events import RejectCode
from services.topics import RedisKeys

PUSH_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

PROCESSED_FIELD = "processed"
DUPLICATES_FIELD = "duplicates"
REJECTED_PREFIX = "rejected:"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class WorkerStats:
    """The worker's exact counters, as kept in the Redis stats hash."""

    processed: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> WorkerStats:
        values = {_text(key): int(value) for key, value in raw.items()}
        rejected = {key[len(REJECTED_PREFIX) :]: n for key, n in values.items() if key.startswith(REJECTED_PREFIX)}
        return cls(
            processed=values.get(PROCESSED_FIELD, 0), duplicates=values.get(DUPLICATES_FIELD, 0), rejected=rejected
        )


def parse_lag(raw: Mapping[bytes | str, bytes | str]) -> dict[tuple[str, str], int]:
    """The lag hash (``topic:partition`` -> records behind) keyed by (topic, partition)."""
    lag: dict[tuple[str, str], int] = {}
    for key, value in raw.items():
        topic, _, partition = _text(key).rpartition(":")
        lag[(topic, partition)] = int(value)
    return lag


async def read_worker_status(redis: Redis, keys: RedisKeys) -> tuple[WorkerStats, dict[tuple[str, str], int]]:
    """The worker's counters and consumer lag, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.worker_stats)
        pipe.hgetall(keys.consumer_lag)
        stats, lag = await pipe.execute()
    return WorkerStats.from_hash(stats), parse_lag(lag)


class WorkerStatusCollector(Collector):
    """Exposes the worker counters last read from Redis (refreshed by the /metrics route)."""

    def __init__(self) -> None:
        self.stats: WorkerStats | None = None
        self.lag: dict[tuple[str, str], int] = {}

    def update(self, stats: WorkerStats | None, lag: dict[tuple[str, str], int]) -> None:
        self.stats = stats
        self.lag = lag

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if self.stats is not None:
            yield CounterMetricFamily(
                "crm_events_processed",
                "Events accepted by the stream worker (exact, from Redis)",
                value=self.stats.processed,
            )
            yield CounterMetricFamily(
                "crm_events_duplicates",
                "Events ignored as repeats of an accepted event_id (exact, from Redis)",
                value=self.stats.duplicates,
            )
            rejected = CounterMetricFamily(
                "crm_events_rejected", "Events sent to the DLQ by the stream worker, by reason code", labels=["reason"]
            )
            for reason in sorted({*(code.value for code in RejectCode), *self.stats.rejected}):
                rejected.add_metric([reason], self.stats.rejected.get(reason, 0))
            yield rejected
        lag = GaugeMetricFamily(
            "crm_consumer_lag",
            "Records behind the end of the log, as last seen by a worker",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(self.lag.items()):
            lag.add_metric([topic, partition], behind)
        yield lag


class ApiMetrics:
    """The metrics of one API process, registered in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.worker = WorkerStatusCollector()
        self.registry.register(self.worker)
        self.event_to_push = Histogram(
            "crm_event_to_push_seconds",
            "From the earliest Kafka timestamp of a batch to its change being pushed to WebSocket clients",
            buckets=PUSH_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ws_clients = Gauge("crm_ws_clients", "Connected WebSocket clients", registry=self.registry)
        self.ingest_events = Counter(
            "crm_ingest_events",
            "Events received by POST /api/v1/events, by result (accepted, rejected, unavailable)",
            labelnames=["result"],
            registry=self.registry,
        )
        self.ws_dropped = Counter(
            "crm_ws_dropped_clients",
            "WebSocket clients disconnected because they fell too far behind",
            registry=self.registry,
        )
        for result in ("accepted", "rejected", "unavailable"):
            self.ingest_events.labels(result=result)

    async def refresh_worker_status(self, redis: Redis, keys: RedisKeys) -> None:
        stats, lag = await read_worker_status(redis, keys)
        self.worker.update(stats, lag)

    def forget_worker_status(self) -> None:
        """Expose no worker counters (Redis did not answer): absent beats stale."""
        self.worker.update(None, {})

    def render(self) -> bytes:
        return generate_latest(self.registry)
