"""Drill-down: the deals and events behind one KPI cell, from the PostgreSQL archive (services.archive)."""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, status
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from dashboard_api.auth import AccessDep, PrincipalDep, authorizer
from dashboard_api.dependencies import KeysDep, PeriodDep, RedisDep, SettingsDep, WindowDep
from dashboard_api.models import ErrorDetail, PeriodInfo, WindowInfo
from services.archive.drilldown import (
    MAX_PAGE_SIZE,
    DrilldownError,
    DrilldownKpi,
    DrilldownQuery,
    DrilldownRow,
    SortKey,
    SortOrder,
    drilldown,
)
from services.auth import Principal
from services.kpis.periods import Period, PeriodKind
from services.quota_store import read_scope_quotas
from services.schemas.events import units_to_decimal
from services.topics import ScopeKind

router = APIRouter(tags=["drilldown"])

ScopeQuery = Annotated[
    str,
    Query(
        description="c (the company), t:<team_id> or m:<manager_id>",
        examples=["c", "t:team-01", "m:alice"],
        pattern=r"^(c|[tm]:.+)$",
    ),
]


@authorizer
async def authorize_scope_query(scope: ScopeQuery, principal: PrincipalDep, access: AccessDep) -> Principal:
    """The caller may read the scope named by the ``scope`` query parameter (as the KPI routes of that scope)."""
    denial = await access.read_denial(principal, scope)
    if denial is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"forbidden: {denial}")
    return principal


def get_archive(connection: HTTPConnection) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = connection.app.state.archive
    return pool


ArchiveDep = Annotated[AsyncConnectionPool, Depends(get_archive)]


class DrilldownPage(BaseModel):
    """One page of the events behind a KPI cell; ``total_rows`` and ``value`` cover every page."""

    scope: str
    kpi: DrilldownKpi
    key: str | None
    period: PeriodInfo | None = None
    window: WindowInfo | None = None
    currency: str
    value: int | Decimal | None = Field(
        description="the KPI computed from all the rows: equal to the number the KPI routes show for the cell"
    )
    total_rows: int = Field(description="how many events the cell holds (on every page together)")
    page: int
    page_size: int
    pages: int
    sort: SortKey
    order: SortOrder
    rows: list[DrilldownRow]


def _period_bounds(period: Period, zone: Any) -> tuple[datetime, datetime]:
    return datetime.combine(period.start, time(0), tzinfo=zone), datetime.combine(period.end, time(0), tzinfo=zone)


def _scope_parts(scope: str) -> tuple[ScopeKind, str]:
    if scope == "c":
        return "company", "all"
    return ("team" if scope.startswith("t:") else "manager"), scope[2:]


@router.get(
    "/drilldown",
    summary="Events behind a KPI cell",
    responses={
        422: {"description": "a breakdown without its key, a key for a KPI without one, a bad period or window"},
        503: {"model": ErrorDetail, "description": "the archive database does not answer"},
    },
)
async def read_drilldown(
    scope: ScopeQuery,
    kpi: Annotated[DrilldownKpi, Query(description="the KPI of the cell (CONTRACT section 3)")],
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    archive: ArchiveDep,
    window: WindowDep,
    period: PeriodDep,
    _: Annotated[Principal, Depends(authorize_scope_query)],
    key: Annotated[
        str | None,
        Query(description="breakdowns: the stage (stage_entries), lost reason (lost_by_reason) or lead source"),
    ] = None,
    sort: Annotated[SortKey, Query(description="column to sort by (ties by event_id)")] = SortKey.OCCURRED_AT,
    order: Annotated[SortOrder, Query(description="asc or desc")] = SortOrder.DESC,
    page: Annotated[int, Query(ge=1, description="page number, from 1")] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="rows per page")] = 50,
) -> DrilldownPage:
    """The archived events one KPI cell counts (scope, period or rolling window, KPI, and a breakdown's key),
    paged and sorted, with the KPI's value computed from all of them: it equals the KPI routes' number."""
    period_info: PeriodInfo | None = None
    window_info: WindowInfo | None = None
    quota: Decimal | None = None
    if window is not None:
        start, end = window.window.start, window.window.end
        window_info = WindowInfo.of(window.window, window.as_of)
    else:
        start, end = _period_bounds(period, settings.business.zone)
        period_info = PeriodInfo.of(period)
        if kpi is DrilldownKpi.QUOTA_ATTAINMENT and period.kind is PeriodKind.MONTH:
            kind, scope_id = _scope_parts(scope)
            (units,) = await read_scope_quotas(redis, keys, kind, scope_id, [period.label])
            quota = units_to_decimal(units) if units is not None else None
    try:
        query = DrilldownQuery(
            scope=scope,
            kpi=kpi,
            key=key,
            start=start,
            end=end,
            sort=sort,
            order=order,
            page=page,
            page_size=page_size,
            quota=quota,
        )
        async with archive.connection() as connection:
            result = await drilldown(connection, query)
    except DrilldownError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"the archive database does not answer ({str(exc).strip().splitlines()[0]}); "
            "is 'crm-pulse archive' running against DATABASE_URL? retry later",
        ) from None
    return DrilldownPage(
        scope=scope,
        kpi=kpi,
        key=key,
        period=period_info,
        window=window_info,
        currency=settings.business.currency,
        value=result.value,
        total_rows=result.total_rows,
        page=page,
        page_size=page_size,
        pages=max(1, -(-result.total_rows // page_size)),
        sort=sort,
        order=order,
        rows=result.rows,
    )
