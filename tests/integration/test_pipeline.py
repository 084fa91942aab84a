"""From simulated CRM events on the real broker to KPIs over REST and live WebSocket changes."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import websockets
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from services.kafka import producer as kafka_producer
from services.kpis.measures import derive_kpis
from services.kpis.periods import PeriodKind, period_of
from services.kpis.reference import ReferenceKpis, admit
from services.schemas.events import ValidationPolicy
from services.settings import Settings
from services.simulation import Simulation, SimulationConfig
from services.simulation.sinks import KafkaSink
from services.topics import RedisKeys, Topics
from tests.integration.api_harness import running_api, wait_until
from tests.integration.worker_process import running_worker

pytestmark = pytest.mark.integration

DEADLINE_S = 180.0


async def worker_done(redis: Redis, keys: RedisKeys, expected: int) -> bool:
    """True once the worker has accounted for ``expected`` records (accepted, duplicate or rejected)."""
    stats = {k.decode(): int(v) for k, v in (await redis.hgetall(keys.worker_stats)).items()}
    return sum(stats.values()) >= expected


async def read_dead_letters(settings: Settings, expected: int) -> list[tuple[bytes, str]]:
    """(original bytes, reason code) of each dead letter, once per source record."""
    consumer = AIOKafkaConsumer(
        settings.kafka.dlq_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        by_source: dict[bytes, tuple[bytes, str]] = {}
        deadline = time.monotonic() + 30
        while len(by_source) < expected and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    headers = dict(message.headers)
                    by_source[headers["crm-source"]] = (message.value, headers["crm-reject-code"].decode())
        return list(by_source.values())
    finally:
        await consumer.stop()


@pytest.fixture
def berlin_settings(make_settings) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(business={"timezone": "Europe/Berlin"}, worker={"batch_size": 500})


async def test_kpis_over_rest_equal_the_reference(berlin_settings: Settings, tmp_path: Path) -> None:
    settings = berlin_settings
    topics = Topics.from_settings(settings)
    from services.kafka import ensure_topics

    await ensure_topics(settings, [topics.events, topics.dlq], settings.kafka.partitions)
    simulation = Simulation(
        SimulationConfig.from_business(
            settings.business, managers=9, teams=3, duplicates=0.02, out_of_order=0.05, malformed=0.02
        ),
        seed=11,
    )
    start = datetime.now(UTC) - timedelta(days=40)
    records = list(simulation.records(start, count=4000))
    async with KafkaSink(settings.kafka.bootstrap_servers, topics.events) as sink:
        await sink.write(records)

    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        with running_worker(settings, tmp_path / "worker.log") as worker:
            try:
                await wait_until(lambda: worker_done(redis, keys, len(records)), within=DEADLINE_S, what="the worker")
            except AssertionError:
                raise AssertionError(f"worker did not finish; log tail:\n{worker.log_tail()}") from None

        policy = ValidationPolicy.from_settings(settings.business)
        admission = admit([r.value for r in records], policy, now=datetime.now(UTC))
        reference = ReferenceKpis(admission.accepted, settings.business.zone)
        stats = {k.decode(): int(v) for k, v in (await redis.hgetall(keys.worker_stats)).items()}
        assert stats["processed"] == len(admission.accepted)
        assert stats.get("duplicates", 0) == admission.duplicates
        expected_codes = Counter(str(code) for _, code in admission.rejected)
        assert {k.removeprefix("rejected:"): v for k, v in stats.items() if k.startswith("rejected:")} == expected_codes
        assert expected_codes == Counter(r.expected for r in records if not r.is_valid and r.expected != "duplicate")

        async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
            paths = {"c": "/api/v1/kpis/company"}
            for scope in reference.scopes():
                if scope.startswith("m:"):
                    paths[scope] = f"/api/v1/kpis/managers/{scope[2:]}"
                elif scope.startswith("t:"):
                    paths[scope] = f"/api/v1/kpis/teams/{scope[2:]}"
            assert len(paths) == 1 + 9 + 3
            periods = {period_of(kind, day) for day in reference.days() for kind in (PeriodKind.DAY, PeriodKind.MONTH)}
            compared = 0
            for scope, path in paths.items():
                for period in periods:
                    response = await api.http.get(path, params={"period": period.kind.value, "at": period.label})
                    assert response.status_code == 200, response.text
                    expected = derive_kpis(reference.measures(scope, period)).model_dump(mode="json")
                    assert response.json()["kpis"] == expected, (scope, period.label)
                    compared += 1
            assert len(periods) >= 8 and compared == len(paths) * len(periods)

        dead = await read_dead_letters(settings, sum(expected_codes.values()))
        malformed = Counter((r.value, r.expected) for r in records if not r.is_valid and r.expected != "duplicate")
        assert Counter(dead) == malformed
    finally:
        await redis.aclose()


async def test_websocket_client_receives_the_change(settings: Settings, tmp_path: Path) -> None:
    from services.kafka import ensure_topics

    topics = Topics.from_settings(settings)
    await ensure_topics(settings, [topics.events, topics.dlq], settings.kafka.partitions)
    now = datetime.now(UTC)
    with running_worker(settings, tmp_path / "worker.log"):
        async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
            async with websockets.connect(api.ws_url) as ws:
                await ws.send(json.dumps({"type": "subscribe", "scopes": ["m:wally"]}))
                snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert snapshot["type"] == "snapshot"
                producer = kafka_producer(settings)
                await producer.start()
                try:
                    event = {
                        "event_id": "ws-1",
                        "type": "call",
                        "occurred_at": now.isoformat(),
                        "manager_id": "wally",
                        "duration_s": 42,
                    }
                    await producer.send_and_wait(topics.events, json.dumps(event).encode(), key=b"wally")
                finally:
                    await producer.stop()
                deadline = time.monotonic() + 60
                while True:
                    remaining = deadline - time.monotonic()
                    assert remaining > 0, "no change for m:wally arrived"
                    message = json.loads(await asyncio.wait_for(ws.recv(), remaining))
                    if message["type"] == "change" and message["scope"] == "m:wally" and message["g"] == "day":
                        break
                assert message["kpis"]["calls"] == 1
                assert message["kpis"]["call_duration_s"] == 42
