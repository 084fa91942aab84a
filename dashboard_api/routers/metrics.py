"""Prometheus exposition of the API's and the stream worker's metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from redis.exceptions import RedisError

from dashboard_api.dependencies import KeysDep, MetricsDep, RedisDep
from dashboard_api.metrics import METRICS_CONTENT_TYPE

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {}}, "description": "Prometheus text exposition format"}},
)
async def read_metrics(metrics: MetricsDep, redis: RedisDep, keys: KeysDep) -> Response:
    """The worker's exact counters and consumer lag (read from Redis now), this process's
    event-to-push latency histogram, WebSocket clients and ingest counters."""
    try:
        await metrics.refresh_worker_status(redis, keys)
    except (RedisError, OSError) as exc:
        log.warning("metrics: worker counters unavailable: %s", exc)
        metrics.forget_worker_status()
    return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)
