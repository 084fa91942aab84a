"""The Redis client factory."""

from __future__ import annotations

from redis.asyncio import Redis

from services.settings import Settings


def redis_client(settings: Settings) -> Redis:
    """An asyncio Redis client for ``settings.redis.url`` answering bytes; close it with ``aclose()``."""
    return Redis.from_url(settings.redis.url, decode_responses=False)
