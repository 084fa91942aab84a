"""KPI series of a scope: one point per local day or month over a range, for trend charts."""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field

from dashboard_api.auth import authorize_company
from dashboard_api.dependencies import (
    KeysDep,
    RedisDep,
    SettingsDep,
    TodayDep,
    company_scope,
    manager_scope,
    team_scope,
)
from dashboard_api.models import ErrorDetail, PeriodInfo, ScopeRef
from services.kpi_reader import read_period_measures_many
from services.kpis.measures import KpiValues, derive_kpis, with_quota
from services.kpis.periods import Period, PeriodKind, period_of
from services.quota_store import read_scope_quotas

router = APIRouter(prefix="/kpis", tags=["kpis"])

DEFAULT_DAYS = 30
MAX_POINTS = 400


class Granularity(StrEnum):
    """One point per local calendar day or month."""

    DAY = "day"
    MONTH = "month"


class SeriesPoint(BaseModel):
    """The KPIs of one day or month of the series."""

    period: PeriodInfo
    kpis: KpiValues


class KpiSeries(BaseModel):
    """A scope's KPIs per day or month, oldest first; days or months without activity have zero counts."""

    scope: ScopeRef
    granularity: Granularity
    start: date = Field(description="first day of the first point (inclusive)")
    end: date = Field(description="day after the last point (exclusive)")
    currency: str
    points: list[SeriesPoint]


RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorDetail, "description": "the scope was never seen"},
    422: {"description": "from is not before to, or the range has more than 400 points"},
}

GranularityQuery = Annotated[Granularity, Query(description="one point per local day or per month")]
FromQuery = Annotated[
    date | None,
    Query(
        alias="from",
        description="first local day (inclusive; for months, the month containing it); "
        "default: 29 days (days) or 11 months (months) before today",
    ),
]
ToQuery = Annotated[
    date | None,
    Query(
        alias="to",
        description="local day after the last one (exclusive; for months, up to the month containing the day "
        "before it); default: tomorrow, so today is the last point",
    ),
]


def _points(granularity: Granularity, start: date | None, end: date | None, today: date) -> list[Period]:
    """The day or month periods of [start, end), oldest first; 422 when empty or too long."""
    end = end if end is not None else today + timedelta(days=1)
    kind = PeriodKind.DAY if granularity is Granularity.DAY else PeriodKind.MONTH
    if start is None:
        if kind is PeriodKind.DAY:
            start = end - timedelta(days=DEFAULT_DAYS)
        else:
            start = period_of(kind, end - timedelta(days=1)).start
            for _ in range(11):
                start = period_of(kind, start - timedelta(days=1)).start
    if end <= start:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"empty range: from {start} is not before to {end} (to is exclusive)",
        )
    periods: list[Period] = []
    day = start
    while day < end:
        period = period_of(kind, day)
        periods.append(period)
        if len(periods) > MAX_POINTS:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"the range {start}..{end} has more than {MAX_POINTS} {granularity.value}s; "
                "ask for a shorter one",
            )
        day = period.end
    return periods


async def _series(
    scope: ScopeRef,
    granularity: Granularity,
    start: date | None,
    end: date | None,
    today: date,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
) -> KpiSeries:
    periods = _points(granularity, start, end, today)
    measures = await read_period_measures_many(redis, keys, [(scope.token, period) for period in periods])
    values = [derive_kpis(part) for part in measures]
    if granularity is Granularity.MONTH:
        quotas = await read_scope_quotas(redis, keys, scope.kind, scope.id, [period.label for period in periods])
        values = [with_quota(kpis, quota) for kpis, quota in zip(values, quotas, strict=True)]
    return KpiSeries(
        scope=scope,
        granularity=granularity,
        start=periods[0].start,
        end=periods[-1].end,
        currency=settings.business.currency,
        points=[SeriesPoint(period=PeriodInfo.of(p), kpis=kpis) for p, kpis in zip(periods, values, strict=True)],
    )


@router.get(
    "/company/series", summary="Company KPI series", responses=RESPONSES, dependencies=[Depends(authorize_company)]
)
async def read_company_series(
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    today: TodayDep,
    granularity: GranularityQuery = Granularity.DAY,
    start: FromQuery = None,
    end: ToQuery = None,
) -> KpiSeries:
    """The company's KPIs per local day (default: the last 30 days) or month (default: the last 12)."""
    return await _series(company_scope(), granularity, start, end, today, settings, redis, keys)


@router.get("/teams/{team_id}/series", summary="Team KPI series", responses=RESPONSES)
async def read_team_series(
    scope: Annotated[ScopeRef, Depends(team_scope)],
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    today: TodayDep,
    granularity: GranularityQuery = Granularity.DAY,
    start: FromQuery = None,
    end: ToQuery = None,
) -> KpiSeries:
    """A team's KPIs per local day (default: the last 30 days) or month (default: the last 12)."""
    return await _series(scope, granularity, start, end, today, settings, redis, keys)


@router.get("/managers/{manager_id}/series", summary="Manager KPI series", responses=RESPONSES)
async def read_manager_series(
    scope: Annotated[ScopeRef, Depends(manager_scope)],
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    today: TodayDep,
    granularity: GranularityQuery = Granularity.DAY,
    start: FromQuery = None,
    end: ToQuery = None,
) -> KpiSeries:
    """A manager's KPIs per local day (default: the last 30 days) or month (default: the last 12), for trend
    charts."""
    return await _series(scope, granularity, start, end, today, settings, redis, keys)
