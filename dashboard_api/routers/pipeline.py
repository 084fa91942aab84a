"""The current open pipeline of a scope, weighted by the funnel's win probabilities."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

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
from dashboard_api.models import ErrorDetail, PipelineReport, ScopeRef
from services.kpi_reader import read_current_and_period_measures
from services.kpis.measures import derive_kpis, derive_pipeline
from services.kpis.periods import PeriodKind, period_of

router = APIRouter(prefix="/pipeline", tags=["pipeline"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail, "description": "the scope was never seen"}}


async def _report(
    scope: ScopeRef, settings: SettingsDep, redis: RedisDep, keys: KeysDep, today: TodayDep
) -> PipelineReport:
    month = period_of(PeriodKind.MONTH, today)
    current, month_measures = await read_current_and_period_measures(redis, keys, scope.token, month)
    month_revenue = derive_kpis(month_measures).revenue
    probabilities = {stage.name: stage.probability for stage in settings.business.funnel}
    pipeline = derive_pipeline(current, probabilities)
    return PipelineReport(
        scope=scope,
        currency=settings.business.currency,
        pipeline=pipeline,
        month=month.label,
        month_revenue=month_revenue,
        forecast=month_revenue + pipeline.weighted_pipeline,
    )


@router.get("/company", summary="Company pipeline", dependencies=[Depends(authorize_company)])
async def read_company_pipeline(
    settings: SettingsDep, redis: RedisDep, keys: KeysDep, today: TodayDep
) -> PipelineReport:
    """Open deals and amounts per stage, weighted pipeline and this month's forecast, for the company."""
    return await _report(company_scope(), settings, redis, keys, today)


@router.get("/teams/{team_id}", summary="Team pipeline", responses=NOT_FOUND)
async def read_team_pipeline(
    scope: Annotated[ScopeRef, Depends(team_scope)],
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    today: TodayDep,
) -> PipelineReport:
    """Open deals whose latest deal event carried this team id, per stage, weighted, with the forecast."""
    return await _report(scope, settings, redis, keys, today)


@router.get("/managers/{manager_id}", summary="Manager pipeline", responses=NOT_FOUND)
async def read_manager_pipeline(
    scope: Annotated[ScopeRef, Depends(manager_scope)],
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    today: TodayDep,
) -> PipelineReport:
    """Open deals whose latest deal event was the manager's, per stage, weighted, with the forecast."""
    return await _report(scope, settings, redis, keys, today)
