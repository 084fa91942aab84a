"""KPIs of a scope (company, team, manager) over a period, with the previous period and the change."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from dashboard_api.dependencies import (
    KeysDep,
    PeriodDep,
    RedisDep,
    SettingsDep,
    company_scope,
    manager_scope,
    team_scope,
)
from dashboard_api.models import ErrorDetail, KpiReport, PeriodInfo, PreviousPeriodKpis, ScopeRef
from services.kpi_reader import read_period_measures_many
from services.kpis.comparison import compare_kpis
from services.kpis.measures import derive_kpis

router = APIRouter(prefix="/kpis", tags=["kpis"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail, "description": "the scope was never seen"}}
BAD_PERIOD: dict[int | str, dict[str, Any]] = {422: {"description": "the period label does not fit the period kind"}}


async def _report(
    scope: ScopeRef, period: PeriodDep, settings: SettingsDep, redis: RedisDep, keys: KeysDep
) -> KpiReport:
    previous = period.previous()
    current_measures, previous_measures = await read_period_measures_many(
        redis, keys, [(scope.token, period), (scope.token, previous)]
    )
    kpis, previous_kpis = derive_kpis(current_measures), derive_kpis(previous_measures)
    return KpiReport(
        scope=scope,
        period=PeriodInfo.of(period),
        currency=settings.business.currency,
        kpis=kpis,
        previous=PreviousPeriodKpis(label=previous.label, start=previous.start, end=previous.end, kpis=previous_kpis),
        change=compare_kpis(kpis, previous_kpis),
    )


@router.get("/company", summary="Company KPIs", responses=BAD_PERIOD)
async def read_company_kpis(period: PeriodDep, settings: SettingsDep, redis: RedisDep, keys: KeysDep) -> KpiReport:
    """Every KPI of the whole company (all events) over the period, the previous period and the change."""
    return await _report(company_scope(), period, settings, redis, keys)


@router.get("/teams/{team_id}", summary="Team KPIs", responses={**NOT_FOUND, **BAD_PERIOD})
async def read_team_kpis(
    scope: Annotated[ScopeRef, Depends(team_scope)],
    period: PeriodDep,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
) -> KpiReport:
    """Every KPI of a team (events carrying its team_id) over the period, the previous period and the change."""
    return await _report(scope, period, settings, redis, keys)


@router.get("/managers/{manager_id}", summary="Manager KPIs", responses={**NOT_FOUND, **BAD_PERIOD})
async def read_manager_kpis(
    scope: Annotated[ScopeRef, Depends(manager_scope)],
    period: PeriodDep,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
) -> KpiReport:
    """Every KPI of a manager (events attributed to them) over the period, the previous period and the change."""
    return await _report(scope, period, settings, redis, keys)
