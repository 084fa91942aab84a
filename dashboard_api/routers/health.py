"""Liveness of the API and of what it depends on."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from redis.exceptions import RedisError

from dashboard_api.dependencies import PublisherDep, RedisDep
from dashboard_api.models import Health

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Health check",
    responses={503: {"model": Health, "description": "Redis does not answer"}},
)
async def read_health(response: Response, redis: RedisDep, publisher: PublisherDep) -> Health:
    """200 while Redis answers (reads and live push work); ``kafka`` tells whether a broker
    answers now (only ingest needs it)."""
    try:
        redis_ok = bool(await redis.ping())
    except (RedisError, OSError):
        redis_ok = False
    kafka_ok = await publisher.is_reachable()
    if not redis_ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if redis_ok and kafka_ok else "degraded", redis=redis_ok, kafka=kafka_ok)
