"""The FastAPI application: REST for KPIs, ingest, live push, metrics and the wall display.

Run with ``uvicorn dashboard_api.app:create_app --factory``; the settings come from the
environment (services.settings.load_settings) unless given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dashboard_api.auth import AUTH_RESPONSES, Access, get_principal, redact_tokens_in_server_logs
from dashboard_api.broadcaster import ChangeBroadcaster
from dashboard_api.business_metrics import BusinessMetricsCollector
from dashboard_api.metrics import ApiMetrics
from dashboard_api.publisher import EventPublisher
from dashboard_api.query_check import reject_unknown_query_parameters
from dashboard_api.routers import (
    alerts,
    directory,
    display,
    drilldown,
    events,
    funnel,
    health,
    kpis,
    leaderboard,
    live,
    metrics,
    pipeline,
    quotas,
    reports,
    series,
    tokens,
)
from dashboard_api.routers.display import STATIC_DIR
from dashboard_api.routers.docs import mount_docs
from dashboard_api.token_watch import TokenWatch
from services.alert_config import AlertConfigWriter
from services.archive.database import archive_pool
from services.quota_store import QuotaWriter
from services.redis import redis_client
from services.reports.saved import SavedReports
from services.settings import Settings, load_settings
from services.token_store import TokenStore
from services.topics import AlertNames, AuthKeys, RedisKeys

API_PREFIX = "/api/v1"

DESCRIPTION = """
Real-time CRM KPIs computed by the CRM Pulse stream worker from the events in Kafka.

* **kpis**: every KPI of the company, a team or a manager for a day, ISO week, month,
  quarter, year or any range of days, with the previous period and the change.
  Month periods include the scope's `quota` and `quota_attainment`.
* **funnel**: entries per configured stage, conversion to the next stage, drop-off, wins and
  losses by reason, for a scope and period.
* **quotas**: each manager's quota per month: set, delete, list, CSV import (kept in Kafka).
* **leaderboard**, **pipeline**, **directory**: rankings, the open pipeline and the forecast,
  the known managers and teams.
* **ingest**: `POST /api/v1/events` validates events like the worker does and writes them to Kafka.
* **live**: WebSocket `/ws` pushes a snapshot, then every change (docs/websocket.md).
* **operations**: `/healthz` and Prometheus `/metrics`.

Money amounts are exact decimals in the reporting currency, sent as strings.

**Access**: every path under `/api/v1` and `/ws` needs an API token (`crmp_...`), as
`Authorization: Bearer <token>` or `?token=<token>`. Roles: admin, director, team_lead, manager,
display (docs/access.md). `/healthz`, `/metrics`, the docs and the wall page are open.
"""

TAGS = [
    {"name": "kpis", "description": "KPIs of a scope over a period (CONTRACT section 3)."},
    {"name": "funnel", "description": "Stage entries, conversion and drop-off of a scope over a period."},
    {"name": "quotas", "description": "Quotas per manager per month (for quota and quota_attainment)."},
    {"name": "leaderboard", "description": "Managers ranked by a KPI."},
    {"name": "pipeline", "description": "Current open pipeline, weighted by stage probability, and forecast."},
    {"name": "directory", "description": "Managers and teams seen in the events."},
    {"name": "ingest", "description": "Validated event ingest into Kafka."},
    {"name": "operations", "description": "Health and metrics."},
    {"name": "display", "description": "The wall-display page."},
    {"name": "drilldown", "description": "The archived deals and events behind a KPI cell (docs/archive.md)."},
    {"name": "reports", "description": "Report builder, presets, saved reports and exports (docs/reports.md)."},
    {"name": "tokens", "description": "API tokens and their roles (admins only)."},
]


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings | None = None, *, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """Build the API; ``clock`` (aware UTC now) is replaceable for tests."""
    settings = settings if settings is not None else load_settings()
    redact_tokens_in_server_logs()
    keys = RedisKeys.from_settings(settings)
    api_metrics = ApiMetrics()
    business_metrics = BusinessMetricsCollector(settings)
    api_metrics.registry.register(business_metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = redis_client(settings)
        publisher = EventPublisher(settings)
        broadcaster = ChangeBroadcaster(
            redis,
            keys,
            api_metrics,
            {stage.name: stage.probability for stage in settings.business.funnel},
            alert_names=AlertNames.from_settings(settings),
            tick_s=settings.api.ws_tick_s,
            heartbeat_s=settings.api.ws_heartbeat_s,
        )
        app.state.redis = redis
        app.state.publisher = publisher
        app.state.broadcaster = broadcaster
        quota_writer = QuotaWriter(settings, redis)
        app.state.quota_writer = quota_writer
        alert_config_writer = AlertConfigWriter(settings, redis)
        app.state.alert_config_writer = alert_config_writer
        saved_reports = SavedReports(settings, redis)
        app.state.saved_reports = saved_reports
        access = Access(
            TokenStore(redis, AuthKeys.from_settings(settings)), redis, keys, enabled=settings.api.auth == "tokens"
        )
        app.state.access = access
        token_watch = TokenWatch(access.store.refused, interval_s=settings.api.ws_token_recheck_s)
        app.state.token_watch = token_watch
        archive = archive_pool(settings.database.url)
        app.state.archive = archive
        await archive.open(wait=False)  # the API serves KPIs without the archive; drill-downs answer 503
        try:
            await broadcaster.start()
            token_watch.start()
            yield
        finally:
            await token_watch.stop()
            await broadcaster.stop()
            await quota_writer.close()
            await alert_config_writer.close()
            await saved_reports.close()
            await publisher.close()
            await redis.aclose()
            await archive.close()

    app = FastAPI(
        title="CRM Pulse API",
        summary="Real-time CRM KPIs, live push and event ingest",
        description=DESCRIPTION,
        version="0.1.0",
        openapi_tags=TAGS,
        lifespan=lifespan,
        # Served by mount_docs from local files: FastAPI's own pages load their assets from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.keys = keys
    app.state.metrics = api_metrics
    app.state.business_metrics = business_metrics
    app.state.clock = clock or utc_now

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"Redis is unavailable ({exc}); the KPI state cannot be read, retry later"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    for router in (
        kpis.router,
        alerts.router,
        funnel.router,
        quotas.router,
        series.router,
        leaderboard.router,
        pipeline.router,
        directory.router,
        events.router,
        tokens.router,
        drilldown.router,
        reports.router,
    ):
        # Every data path needs a token; each route declares who may use it (dashboard_api/auth.py).
        # Unknown query parameters get a 422 rather than being ignored (dashboard_api/query_check.py).
        app.include_router(
            router,
            prefix=API_PREFIX,
            dependencies=[Depends(get_principal), Depends(reject_unknown_query_parameters)],
            responses=AUTH_RESPONSES,
        )
    app.include_router(live.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(display.router)
    mount_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
