"""The Redis client factory."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from services.settings import Settings

MAX_CONNECTIONS = 200
POOL_WAIT_S = 10.0


def redis_client(settings: Settings) -> Redis:
    """An asyncio Redis client for ``settings.redis.url`` answering bytes; close it with ``aclose()``.

    The pool waits for a free connection (up to 10 s) instead of failing at once when all are in
    use, so a burst of requests (many WebSocket clients reconnecting together) queues briefly.
    """
    pool = BlockingConnectionPool.from_url(settings.redis.url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_S)
    return Redis.from_pool(pool)
