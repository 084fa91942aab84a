"""KPIs of a scope (company, team, manager) over a period or a rolling window, with the previous one and the change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status

from dashboard_api.auth import authorize_company
from dashboard_api.dependencies import (
    KeysDep,
    PeriodDep,
    RedisDep,
    SettingsDep,
    WindowDep,
    WindowRequest,
    company_scope,
    manager_scope,
    team_scope,
)
from dashboard_api.models import (
    ErrorDetail,
    KpiReport,
    PeriodInfo,
    PreviousPeriodKpis,
    PreviousWindowKpis,
    ScopeRef,
    WindowInfo,
    WindowKpiReport,
)
from services.kpi_reader import read_period_measures_many, read_window_measures_many
from services.kpis.comparison import compare_kpis
from services.kpis.measures import derive_kpis, with_quota
from services.kpis.periods import PeriodKind
from services.kpis.retention import RetentionPolicy
from services.quota_store import read_scope_quotas

router = APIRouter(prefix="/kpis", tags=["kpis"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail, "description": "the scope was never seen"}}
BAD_PERIOD: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "the period label does not fit the period kind; window mixed with period/at; "
        "or a window reaching further back than the rolling-window history kept"
    }
}


async def _report(
    scope: ScopeRef, period: PeriodDep, settings: SettingsDep, redis: RedisDep, keys: KeysDep
) -> KpiReport:
    previous = period.previous()
    current_measures, previous_measures = await read_period_measures_many(
        redis, keys, [(scope.token, period), (scope.token, previous)]
    )
    kpis, previous_kpis = derive_kpis(current_measures), derive_kpis(previous_measures)
    if period.kind is PeriodKind.MONTH:
        quota, previous_quota = await read_scope_quotas(
            redis, keys, scope.kind, scope.id, [period.label, previous.label]
        )
        kpis, previous_kpis = with_quota(kpis, quota), with_quota(previous_kpis, previous_quota)
    return KpiReport(
        scope=scope,
        period=PeriodInfo.of(period),
        currency=settings.business.currency,
        kpis=kpis,
        previous=PreviousPeriodKpis(label=previous.label, start=previous.start, end=previous.end, kpis=previous_kpis),
        change=compare_kpis(kpis, previous_kpis),
    )


async def _window_report(
    scope: ScopeRef, request: WindowRequest, settings: SettingsDep, redis: RedisDep, keys: KeysDep
) -> WindowKpiReport:
    window = request.window
    previous = window.previous()
    read = await read_window_measures_many(redis, keys, [(scope.token, window), (scope.token, previous)])
    if read.watermark_us is not None:
        policy = RetentionPolicy.from_settings(settings)
        horizon_s = policy.window_horizon_s(read.watermark_us)
        if previous.start_minute * 60 < horizon_s:
            horizon = datetime.fromtimestamp(horizon_s, UTC)
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=(
                    f"the {window.length} window ending {window.end.isoformat()} and the one before it start at "
                    f"{previous.start.isoformat()}, before the rolling-window history kept "
                    f"({policy.window_days} days behind the newest event: from {horizon.isoformat()}); "
                    "choose a later as_of, or a calendar period"
                ),
            )
    current_measures, previous_measures = read.measures
    kpis, previous_kpis = derive_kpis(current_measures), derive_kpis(previous_measures)
    return WindowKpiReport(
        scope=scope,
        window=WindowInfo.of(window, request.as_of),
        currency=settings.business.currency,
        kpis=kpis,
        previous=PreviousWindowKpis(start=previous.start, end=previous.end, kpis=previous_kpis),
        change=compare_kpis(kpis, previous_kpis),
    )


@router.get("/company", summary="Company KPIs", responses=BAD_PERIOD, dependencies=[Depends(authorize_company)])
async def read_company_kpis(
    window: WindowDep, period: PeriodDep, settings: SettingsDep, redis: RedisDep, keys: KeysDep
) -> KpiReport | WindowKpiReport:
    """Every KPI of the whole company (all events) over the period or rolling window, the previous one and the
    change."""
    if window is not None:
        return await _window_report(company_scope(), window, settings, redis, keys)
    return await _report(company_scope(), period, settings, redis, keys)


@router.get("/teams/{team_id}", summary="Team KPIs", responses={**NOT_FOUND, **BAD_PERIOD})
async def read_team_kpis(
    scope: Annotated[ScopeRef, Depends(team_scope)],
    window: WindowDep,
    period: PeriodDep,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
) -> KpiReport | WindowKpiReport:
    """Every KPI of a team (events carrying its team_id) over the period or rolling window, the previous one and
    the change."""
    if window is not None:
        return await _window_report(scope, window, settings, redis, keys)
    return await _report(scope, period, settings, redis, keys)


@router.get("/managers/{manager_id}", summary="Manager KPIs", responses={**NOT_FOUND, **BAD_PERIOD})
async def read_manager_kpis(
    scope: Annotated[ScopeRef, Depends(manager_scope)],
    window: WindowDep,
    period: PeriodDep,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
) -> KpiReport | WindowKpiReport:
    """Every KPI of a manager (events attributed to them) over the period or rolling window, the previous one and
    the change."""
    if window is not None:
        return await _window_report(scope, window, settings, redis, keys)
    return await _report(scope, period, settings, redis, keys)
