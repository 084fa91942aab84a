"""Shared steps of the end-to-end pipeline tests: wait for the worker, compare with the reference."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from services.kpis.measures import derive_kpis
from services.kpis.periods import Period, PeriodKind, period_of
from services.kpis.reference import WINDOW_LENGTHS, ReferenceKpis, admit, window_bounds
from services.schemas.events import ValidationPolicy
from services.settings import Settings
from services.simulation import SimRecord, Simulation, SimulationConfig
from services.simulation.sinks import KafkaSink
from services.topics import RedisKeys
from tests.integration.api_harness import RunningApi, running_api


async def worker_stats(redis: Redis, keys: RedisKeys) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis.hgetall(keys.worker_stats)).items()}


async def records_accounted(redis: Redis, keys: RedisKeys) -> int:
    """Records the worker has applied: accepted, duplicate or rejected."""
    return sum((await worker_stats(redis, keys)).values())


async def worker_reached(redis: Redis, keys: RedisKeys, count: int) -> bool:
    """True once the worker has applied at least ``count`` records."""
    return await records_accounted(redis, keys) >= count


def malformed(records: Iterable[SimRecord]) -> Counter[tuple[bytes, str]]:
    """(bytes, expected reason code) of every record the contract rejects."""
    return Counter((r.value, r.expected) for r in records if not r.is_valid and r.expected != "duplicate")


def reference_of(settings: Settings, records: Sequence[SimRecord]) -> tuple[ReferenceKpis, Counter[str], int]:
    """The batch reference of the produced records: KPIs, rejections by code, duplicates."""
    policy = ValidationPolicy.from_settings(settings.business)
    admission = admit([r.value for r in records], policy, now=datetime.now(UTC))
    rejected = Counter(str(code) for _, code in admission.rejected)
    return ReferenceKpis(admission.accepted, settings.business.zone), rejected, admission.duplicates


async def assert_worker_counters(
    redis: Redis, keys: RedisKeys, reference: ReferenceKpis, rejected: Counter[str], duplicates: int, accepted: int
) -> None:
    stats = await worker_stats(redis, keys)
    assert stats["processed"] == accepted
    assert stats.get("duplicates", 0) == duplicates
    assert {k.removeprefix("rejected:"): v for k, v in stats.items() if k.startswith("rejected:")} == rejected


async def produce_simulated(
    settings: Settings, *, seed: int, days: int, count: int, end: datetime | None = None
) -> list[SimRecord]:
    """``count`` simulated records from ``days`` ago on (until ``end`` at most, and never past the wall
    clock; 9 managers, 3 teams; 2 % duplicates, 5 % out of order, 2 % malformed), written to the events
    topic. The simulated calendar skips weekends, so a few days' records run on past today's date."""
    config = SimulationConfig.from_business(
        settings.business, managers=9, teams=3, duplicates=0.02, out_of_order=0.05, malformed=0.02
    )
    now = datetime.now(UTC)
    end = now if end is None else min(end, now)
    records = list(Simulation(config, seed=seed).records(now - timedelta(days=days), end=end, count=count))
    async with KafkaSink(settings.kafka.bootstrap_servers, settings.kafka.events_topic) as sink:
        await sink.write(records)
    return records


async def assert_state_equals_reference(
    settings: Settings, redis: Redis, records: Sequence[SimRecord]
) -> tuple[ReferenceKpis, Counter[str], set[Period], int]:
    """The worker's counters and every KPI over REST for every day and month equal the batch reference
    of the records; returns the reference, the rejections by code, the periods and the reads compared."""
    keys = RedisKeys.from_settings(settings)
    reference, rejected, duplicates = reference_of(settings, records)
    assert rejected == Counter(code for _, code in malformed(records).elements())
    accepted = len(records) - sum(rejected.values()) - duplicates
    await assert_worker_counters(redis, keys, reference, rejected, duplicates, accepted)
    async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
        periods = periods_of(reference, (PeriodKind.DAY, PeriodKind.MONTH))
        compared = await assert_api_equals_reference(api, reference, periods)
    assert compared > 0
    return reference, rejected, periods, compared


def scope_paths(reference: ReferenceKpis) -> dict[str, str]:
    paths = {"c": "/api/v1/kpis/company"}
    for scope in reference.scopes():
        if scope.startswith("m:"):
            paths[scope] = f"/api/v1/kpis/managers/{scope[2:]}"
        elif scope.startswith("t:"):
            paths[scope] = f"/api/v1/kpis/teams/{scope[2:]}"
    return paths


def periods_of(reference: ReferenceKpis, kinds: Sequence[PeriodKind]) -> set[Period]:
    return {period_of(kind, day) for day in reference.days() for kind in kinds}


async def assert_api_equals_reference(api: RunningApi, reference: ReferenceKpis, periods: set[Period]) -> int:
    """Every scope and period over REST equals the reference; returns how many were compared."""
    compared = 0
    for scope, path in scope_paths(reference).items():
        for period in periods:
            response = await api.http.get(path, params={"period": period.kind.value, "at": period.label})
            assert response.status_code == 200, response.text
            expected = derive_kpis(reference.measures(scope, period)).model_dump(mode="json")
            assert response.json()["kpis"] == expected, (scope, period.label)
            compared += 1
    return compared


def latest_event_time(reference: ReferenceKpis) -> datetime:
    """The highest occurred_at the reference accepted: the watermark the state should hold."""
    return max(entries[-1][0] for entries in reference.timed.values() if entries)


async def assert_api_windows_equal_reference(
    api: RunningApi, reference: ReferenceKpis, as_ofs: Sequence[datetime], settings: Settings
) -> tuple[int, int]:
    """Every scope's 1h, 24h, 7d and 30d windows (and the window before each) ending at each ``as_of``,
    over REST, equal the reference; a window whose previous window starts before the rolling-window
    history kept behind the watermark is refused (422). Returns (compared, refused)."""
    kept = min(settings.retention.minute_days, settings.retention.hour_days, settings.retention.utcday_days)
    watermark = latest_event_time(reference).astimezone(UTC).replace(microsecond=0)
    horizon = watermark - timedelta(days=kept)
    compared = refused = 0
    for scope, path in scope_paths(reference).items():
        for as_of in as_ofs:
            for length, size in WINDOW_LENGTHS.items():
                response = await api.http.get(path, params={"window": length, "as_of": as_of.isoformat()})
                start, end = window_bounds(length, as_of)
                if start - size < horizon:
                    assert response.status_code == 422, (scope, length, as_of, response.text)
                    refused += 1
                    continue
                assert response.status_code == 200, response.text
                body = response.json()
                expected = derive_kpis(reference.window_measures(scope, start, end)).model_dump(mode="json")
                before = derive_kpis(reference.window_measures(scope, start - size, start)).model_dump(mode="json")
                assert body["kpis"] == expected, (scope, length, as_of)
                assert body["previous"]["kpis"] == before, (scope, length, as_of)
                assert (body["window"]["start"], body["window"]["end"]) == (
                    start.isoformat().replace("+00:00", "Z"),
                    end.isoformat().replace("+00:00", "Z"),
                )
                compared += 1
    return compared, refused


async def read_dead_letters(settings: Settings, expected: int, within: float = 30.0) -> list[tuple[bytes, str]]:
    """(original bytes, reason code) of each dead letter, once per source record (key = source position)."""
    consumer = AIOKafkaConsumer(
        settings.kafka.dlq_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        by_source: dict[bytes, tuple[bytes, str]] = {}
        deadline = time.monotonic() + within
        while len(by_source) < expected and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    headers = dict(message.headers)
                    by_source[message.key] = (message.value, headers["crm-reject-code"].decode())
        return list(by_source.values())
    finally:
        await consumer.stop()
