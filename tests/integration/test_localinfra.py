"""The servers the test session runs are real: a Kafka round trip and Redis reads and writes."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from services import kafka
from services.localinfra import stack
from services.settings import Settings
from services.topics import Topics
from tests.conftest import Infra

pytestmark = pytest.mark.integration


async def test_produce_then_consume_round_trip(settings: Settings, topics: Topics) -> None:
    sent = {f"deal-{n}".encode(): f'{{"n": {n}}}'.encode() for n in range(20)}
    async with kafka.producer(settings, acks="all") as producer:
        for key, value in sent.items():
            await producer.send(topics.events, key=key, value=value)
        await producer.flush()

    received: dict[bytes, bytes] = {}
    consumer = kafka.consumer(settings, topics.events, auto_offset_reset="earliest", enable_auto_commit=False)
    async with consumer:
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                received.update((record.key, record.value) for record in records if record.key is not None)
        partitions = consumer.partitions_for_topic(topics.events)

    assert received == sent
    assert partitions == set(range(settings.kafka.partitions))


async def test_ensure_topics_creates_once_and_ignores_existing(settings: Settings) -> None:
    name = settings.kafka.events_topic
    assert await kafka.ensure_topics(settings, [name], partitions=3, config={"retention.ms": "3600000"}) == [name]
    assert await kafka.ensure_topics(settings, [name], partitions=3) == []

    admin = kafka.admin(settings)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([name])
    finally:
        await admin.close()
    assert described["error_code"] == 0
    assert len(described["partitions"]) == 3


async def test_redis_set_get_and_pubsub(settings: Settings, redis: Redis) -> None:
    key = f"{settings.redis.key_prefix}:probe"
    await redis.set(key, b"\x00pulse\xff")
    assert await redis.get(key) == b"\x00pulse\xff"

    channel = f"{settings.redis.key_prefix}:changes"
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(channel)
        await redis.publish(channel, b"hello")
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            await asyncio.sleep(0)
    assert message is not None and message["data"] == b"hello"


def test_status_reports_both_servers_up(infra: Infra) -> None:
    statuses = {server.name: server for server in stack.status(infra.settings, external=infra.external)}
    assert statuses["kafka"].running
    assert statuses["redis"].running
