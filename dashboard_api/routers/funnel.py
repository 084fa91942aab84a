"""The sales funnel of a scope (company, team, manager) over a period: stage entries and conversions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from dashboard_api.auth import authorize_company
from dashboard_api.dependencies import (
    KeysDep,
    PeriodDep,
    RedisDep,
    SettingsDep,
    company_scope,
    manager_scope,
    team_scope,
)
from dashboard_api.models import ErrorDetail, FunnelReport, PeriodInfo, ScopeRef
from services.kpi_reader import read_period_measures
from services.kpis.funnel import derive_funnel
from services.kpis.measures import derive_kpis

router = APIRouter(prefix="/funnel", tags=["funnel"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail, "description": "the scope was never seen"}}
BAD_PERIOD: dict[int | str, dict[str, Any]] = {422: {"description": "the period label does not fit the period kind"}}


async def _report(
    scope: ScopeRef, period: PeriodDep, settings: SettingsDep, redis: RedisDep, keys: KeysDep
) -> FunnelReport:
    measures = await read_period_measures(redis, keys, scope.token, period)
    funnel = derive_funnel(derive_kpis(measures), settings.business.stage_names)
    return FunnelReport(scope=scope, period=PeriodInfo.of(period), funnel=funnel)


@router.get("/company", summary="Company funnel", responses=BAD_PERIOD, dependencies=[Depends(authorize_company)])
async def read_company_funnel(period: PeriodDep, settings: SettingsDep, redis: RedisDep, keys: KeysDep) -> FunnelReport:
    """Entries per configured stage, stage-to-stage conversion and drop-off, wins and losses of the company."""
    return await _report(company_scope(), period, settings, redis, keys)


@router.get("/teams/{team_id}", summary="Team funnel", responses={**NOT_FOUND, **BAD_PERIOD})
async def read_team_funnel(
    scope: Annotated[ScopeRef, Depends(team_scope)],
    period: PeriodDep,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
) -> FunnelReport:
    """The funnel of the deal events carrying this team id in the period."""
    return await _report(scope, period, settings, redis, keys)


@router.get("/managers/{manager_id}", summary="Manager funnel", responses={**NOT_FOUND, **BAD_PERIOD})
async def read_manager_funnel(
    scope: Annotated[ScopeRef, Depends(manager_scope)],
    period: PeriodDep,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
) -> FunnelReport:
    """The funnel of the deal events attributed to this manager in the period."""
    return await _report(scope, period, settings, redis, keys)
