"""Typed dependencies of the routes: what the app holds, the requested period, the scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, status
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from dashboard_api.auth import authorize_manager, authorize_team
from dashboard_api.broadcaster import ChangeBroadcaster
from dashboard_api.metrics import ApiMetrics
from dashboard_api.models import ScopeRef
from dashboard_api.publisher import EventPublisher
from services.alert_config import AlertConfigWriter
from services.auth import Principal
from services.kpi_reader import manager_exists, team_exists
from services.kpis.periods import Period, PeriodKind, local_date, month_key, parse_period
from services.kpis.windows import Window, WindowLength, window_ending
from services.quota_store import QuotaWriter, read_quota
from services.settings import Settings
from services.topics import COMPANY_ID, RedisKeys, scope_token


def get_settings(connection: HTTPConnection) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


def get_redis(connection: HTTPConnection) -> Redis:
    redis: Redis = connection.app.state.redis
    return redis


def get_keys(connection: HTTPConnection) -> RedisKeys:
    keys: RedisKeys = connection.app.state.keys
    return keys


def get_now(connection: HTTPConnection) -> datetime:
    """The wall clock (UTC); replaceable through ``create_app(clock=...)``."""
    now: datetime = connection.app.state.clock()
    return now


def get_metrics(connection: HTTPConnection) -> ApiMetrics:
    metrics: ApiMetrics = connection.app.state.metrics
    return metrics


def get_publisher(connection: HTTPConnection) -> EventPublisher:
    publisher: EventPublisher = connection.app.state.publisher
    return publisher


def get_broadcaster(connection: HTTPConnection) -> ChangeBroadcaster:
    broadcaster: ChangeBroadcaster = connection.app.state.broadcaster
    return broadcaster


def get_quota_writer(connection: HTTPConnection) -> QuotaWriter:
    writer: QuotaWriter = connection.app.state.quota_writer
    return writer


def get_alert_config_writer(connection: HTTPConnection) -> AlertConfigWriter:
    writer: AlertConfigWriter = connection.app.state.alert_config_writer
    return writer


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[Redis, Depends(get_redis)]
KeysDep = Annotated[RedisKeys, Depends(get_keys)]
NowDep = Annotated[datetime, Depends(get_now)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
PublisherDep = Annotated[EventPublisher, Depends(get_publisher)]
BroadcasterDep = Annotated[ChangeBroadcaster, Depends(get_broadcaster)]
QuotaWriterDep = Annotated[QuotaWriter, Depends(get_quota_writer)]
AlertConfigWriterDep = Annotated[AlertConfigWriter, Depends(get_alert_config_writer)]


def get_today(settings: SettingsDep, now: NowDep) -> date:
    """Today's date in the business time zone."""
    return local_date(now, settings.business.zone)


TodayDep = Annotated[date, Depends(get_today)]


def get_period(
    today: TodayDep,
    period: Annotated[
        PeriodKind, Query(description="kind of period: day, week (ISO, Monday start), month, quarter, year or range")
    ] = PeriodKind.DAY,
    at: Annotated[
        str | None,
        Query(
            description=(
                "period label: 2026-11-27 (day), 2026-W48 (week), 2026-11 (month), 2026-Q4 (quarter), 2026 (year), "
                "FROM..TO with TO exclusive (range, required); default: the period containing today"
            ),
            examples=["2026-11-27"],
        ),
    ] = None,
) -> Period:
    """The requested period; 422 with the reason when the label does not fit the kind."""
    try:
        return parse_period(period, at, today=today)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"bad period: {exc}") from None


PeriodDep = Annotated[Period, Depends(get_period)]


@dataclass(frozen=True)
class WindowRequest:
    """A requested rolling window, and the instant it was asked to end at."""

    window: Window
    as_of: datetime


def get_window(
    connection: HTTPConnection,
    now: NowDep,
    window: Annotated[
        WindowLength | None,
        Query(description="rolling window instead of a calendar period: 1h, 24h, 7d or 30d, ending at as_of"),
    ] = None,
    as_of: Annotated[
        datetime | None,
        Query(
            description=(
                "end of the rolling window, RFC 3339 with an offset, rounded down to the whole UTC minute; "
                "default: now. Only with window"
            ),
            examples=["2026-11-27T12:00:00Z"],
        ),
    ] = None,
) -> WindowRequest | None:
    """The requested rolling window, or None for a calendar period; 422 when the two are mixed."""
    if window is None:
        if as_of is not None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail="as_of is the end of a rolling window: give window=1h, 24h, 7d or 30d with it",
            )
        return None
    mixed = [name for name in ("period", "at") if name in connection.query_params]
    if mixed:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=(
                f"window cannot be combined with {' or '.join(mixed)}: ask either for a rolling window "
                "(window=1h|24h|7d|30d, optional as_of) or for a calendar period (period=..., at=...)"
            ),
        )
    if as_of is not None and (as_of.tzinfo is None or as_of.utcoffset() is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"as_of {as_of.isoformat()} has no UTC offset; write it like 2026-11-27T12:00:00Z or +01:00",
        )
    end = as_of if as_of is not None else now
    return WindowRequest(window=window_ending(window, end), as_of=end)


WindowDep = Annotated[WindowRequest | None, Depends(get_window)]


def company_scope() -> ScopeRef:
    return ScopeRef(kind="company", id=COMPANY_ID, token=scope_token("company", COMPANY_ID))


async def team_scope(
    team_id: Annotated[str, Path(description="team id as carried by events (team_id)")],
    redis: RedisDep,
    keys: KeysDep,
    _: Annotated[Principal, Depends(authorize_team)],
) -> ScopeRef:
    """The team, if the caller may read it (else 403), or 404 when no event ever carried this team id."""
    if not await team_exists(redis, keys, team_id):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"unknown team {team_id!r}: no event has carried it; GET /api/v1/teams lists the known teams",
        )
    return ScopeRef(kind="team", id=team_id, token=scope_token("team", team_id))


async def manager_scope(
    manager_id: Annotated[str, Path(description="manager id as carried by events (manager_id)")],
    redis: RedisDep,
    keys: KeysDep,
    today: TodayDep,
    _: Annotated[Principal, Depends(authorize_manager)],
) -> ScopeRef:
    """The manager, if the caller may read it (else 403), or 404 when no event was ever attributed to this
    manager id and it has no quota for the current month."""
    # A manager given a plan before their first event is known: their page shows zeros against it.
    month = month_key(today)
    if not await manager_exists(redis, keys, manager_id) and await read_quota(redis, keys, manager_id, month) is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=(
                f"unknown manager {manager_id!r}: no event was attributed to it and it has no quota for {month}; "
                "GET /api/v1/managers lists the managers with events"
            ),
        )
    return ScopeRef(kind="manager", id=manager_id, token=scope_token("manager", manager_id))
