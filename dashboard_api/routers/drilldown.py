"""Drill-down: the deals and events behind one KPI cell, from the PostgreSQL archive (services.archive)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from dashboard_api.auth import AccessDep, PrincipalDep, authorizer
from dashboard_api.dependencies import KeysDep, PeriodDep, RedisDep, SettingsDep, WindowDep
from dashboard_api.exports import export_response
from dashboard_api.models import ErrorDetail, PeriodInfo, WindowInfo
from services.archive.drilldown import (
    MAX_PAGE_SIZE,
    DrilldownError,
    DrilldownKpi,
    DrilldownQuery,
    DrilldownResult,
    DrilldownRow,
    SortKey,
    SortOrder,
    drilldown,
)
from services.auth import Principal
from services.kpis.periods import Period, PeriodKind
from services.quota_store import read_scope_quotas
from services.reports.drilldown_table import drilldown_table
from services.reports.exports import ExportFormat, render
from services.schemas.events import units_to_decimal
from services.topics import parse_scope_token

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


@dataclass(frozen=True)
class Cell:
    """Where a KPI cell's events fall: its time bounds, what to say about them, and a month's quota."""

    start: datetime
    end: datetime
    period_info: PeriodInfo | None
    window_info: WindowInfo | None
    quota: Decimal | None

    def query(self, **fields: Any) -> DrilldownQuery:
        try:
            return DrilldownQuery(start=self.start, end=self.end, quota=self.quota, **fields)
        except (DrilldownError, ValueError) as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None


@dataclass(frozen=True)
class CellRequest:
    """A drill-down's cell as asked (scope, KPI, key, order) and where its events fall."""

    scope: str
    kpi: DrilldownKpi
    key: str | None
    sort: SortKey
    order: SortOrder
    cell: Cell
    currency: str

    def query(self, page: int, page_size: int) -> DrilldownQuery:
        fields = {"scope": self.scope, "kpi": self.kpi, "key": self.key, "sort": self.sort, "order": self.order}
        return self.cell.query(page=page, page_size=page_size, **fields)


async def cell_request(
    scope: ScopeQuery,
    kpi: Annotated[DrilldownKpi, Query(description="the KPI of the cell (CONTRACT section 3)")],
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    window: WindowDep,
    period: PeriodDep,
    _: Annotated[Principal, Depends(authorize_scope_query)],
    key: Annotated[
        str | None,
        Query(description="breakdowns: the stage (stage_entries), lost reason (lost_by_reason) or lead source"),
    ] = None,
    sort: Annotated[SortKey, Query(description="column to sort by (ties by event_id)")] = SortKey.OCCURRED_AT,
    order: Annotated[SortOrder, Query(description="asc or desc")] = SortOrder.DESC,
) -> CellRequest:
    """The cell of the query parameters, once the caller may read its scope."""
    if window is not None:
        cell = Cell(window.window.start, window.window.end, None, WindowInfo.of(window.window, window.as_of), None)
    else:
        start, end = _period_bounds(period, settings.business.zone)
        quota: Decimal | None = None
        if kpi is DrilldownKpi.QUOTA_ATTAINMENT and period.kind is PeriodKind.MONTH:
            kind, scope_id = parse_scope_token(scope)
            (units,) = await read_scope_quotas(redis, keys, kind, scope_id, [period.label])
            quota = units_to_decimal(units) if units is not None else None
        cell = Cell(start, end, PeriodInfo.of(period), None, quota)
    return CellRequest(scope, kpi, key, sort, order, cell, settings.business.currency)


CellDep = Annotated[CellRequest, Depends(cell_request)]


async def _read(archive: AsyncConnectionPool, query: DrilldownQuery) -> DrilldownResult:
    """One page of the cell; 422 for a cell that cannot be read, 503 when the archive does not answer."""
    try:
        async with archive.connection() as connection:
            return await drilldown(connection, query)
    except DrilldownError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"the archive database does not answer ({str(exc).strip().splitlines()[0]}); "
            "is 'crm-pulse archive' running against DATABASE_URL? retry later",
        ) from None


@router.get(
    "/drilldown",
    summary="Events behind a KPI cell",
    responses={
        422: {"description": "a breakdown without its key, a key for a KPI without one, a bad period or window"},
        503: {"model": ErrorDetail, "description": "the archive database does not answer"},
    },
)
async def read_drilldown(
    request: CellDep,
    archive: ArchiveDep,
    page: Annotated[int, Query(ge=1, description="page number, from 1")] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="rows per page")] = 50,
) -> DrilldownPage:
    """The archived events one KPI cell counts (scope, period or rolling window, KPI, and a breakdown's key),
    paged and sorted, with the KPI's value computed from all of them: it equals the KPI routes' number."""
    result = await _read(archive, request.query(page, page_size))
    scope, kpi, key, sort, order = request.scope, request.kpi, request.key, request.sort, request.order
    period_info, window_info = request.cell.period_info, request.cell.window_info
    return DrilldownPage(
        scope=scope,
        kpi=kpi,
        key=key,
        period=period_info,
        window=window_info,
        currency=request.currency,
        value=result.value,
        total_rows=result.total_rows,
        page=page,
        page_size=page_size,
        pages=max(1, -(-result.total_rows // page_size)),
        sort=sort,
        order=order,
        rows=result.rows,
    )


EXPORT_MAX_ROWS = 100_000
"""The most events one drill-down export lists; a larger cell is refused (narrow its period or scope)."""


@router.get(
    "/drilldown/export",
    summary="Events behind a KPI cell, as a file",
    response_class=Response,
    responses={
        200: {
            "description": "the cell's events as CSV, XLSX or PDF, sorted as asked",
            "content": {"text/csv": {}, "application/pdf": {}, "application/vnd.ms-excel": {}},
        },
        422: {"description": "as the drill-down, or a cell of more than 100,000 events"},
        503: {"model": ErrorDetail, "description": "the archive database does not answer"},
    },
)
async def export_drilldown(
    request: CellDep,
    archive: ArchiveDep,
    export_format: Annotated[ExportFormat, Query(alias="format", description="csv, xlsx or pdf")],
) -> Response:
    """Every event of the cell (up to 100,000) in one file, with the KPI's value from all of them in the header."""
    first = await _read(archive, request.query(1, MAX_PAGE_SIZE))
    if first.total_rows > EXPORT_MAX_ROWS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"the cell holds {first.total_rows:,} events; an export lists at most {EXPORT_MAX_ROWS:,}: "
            "narrow the period or the scope",
        )
    rows = list(first.rows)
    for page in range(2, -(-first.total_rows // MAX_PAGE_SIZE) + 1):
        rows += (await _read(archive, request.query(page, MAX_PAGE_SIZE))).rows
    cell = request.cell
    bounds = cell.period_info.label if cell.period_info is not None else f"{cell.start:%Y-%m-%d %H:%M:%S} to {cell.end}"
    table = drilldown_table(
        title=f"{request.kpi.value}{f' {request.key}' if request.key else ''} · {request.scope}",
        subtitle=f"{bounds} · {first.total_rows} events · value {'undefined' if first.value is None else first.value}",
        currency=request.currency,
        rows=rows,
    )
    return export_response(render(table, export_format))
