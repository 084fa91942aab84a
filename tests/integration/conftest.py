"""Fixtures for tests against the real Kafka and Redis (``infra`` and ``settings`` live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.kafka import ensure_topics
from services.redis import redis_client
from services.settings import Settings
from services.topics import Topics


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """A client of the test Redis; the test's keys (its fresh prefix) are deleted afterwards."""
    client = redis_client(settings)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{settings.redis.key_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def topics(settings: Settings) -> Topics:
    """The test's fresh topics, created with ``settings.kafka.partitions`` partitions."""
    names = Topics.from_settings(settings)
    await ensure_topics(settings, [names.events, names.dlq, names.kpi_updates], settings.kafka.partitions)
    return names
