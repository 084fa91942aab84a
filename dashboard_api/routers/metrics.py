"""Prometheus exposition of the API's and the stream worker's metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from redis.exceptions import RedisError

from dashboard_api.business_metrics import BusinessMetricsCollector
from dashboard_api.dependencies import KeysDep, MetricsDep, NowDep, RedisDep
from dashboard_api.metrics import METRICS_CONTENT_TYPE

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {}}, "description": "Prometheus text exposition format"}},
)
async def read_metrics(request: Request, metrics: MetricsDep, redis: RedisDep, keys: KeysDep, now: NowDep) -> Response:
    """The worker's exact counters and consumer lag (read from Redis now), the KPI gauges of the
    company and each team (read at most once per ``metrics.kpi_cache_s``), this process's
    event-to-push latency histogram, WebSocket clients and ingest counters (docs/operations.md)."""
    try:
        await metrics.refresh_worker_status(redis, keys)
    except (RedisError, OSError) as exc:
        log.warning("metrics: worker counters unavailable: %s", exc)
        metrics.forget_worker_status()
    business: BusinessMetricsCollector = request.app.state.business_metrics
    try:
        await business.refresh(redis, keys, now)
    except (RedisError, OSError) as exc:
        log.warning("metrics: KPI gauges unavailable: %s", exc)
        business.forget()
    return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)
