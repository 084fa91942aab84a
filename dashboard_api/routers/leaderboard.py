"""Managers ranked by a KPI over a period."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from dashboard_api.auth import LeaderboardTeamDep
from dashboard_api.dependencies import KeysDep, PeriodDep, RedisDep, SettingsDep
from dashboard_api.models import ErrorDetail, Leaderboard, PeriodInfo
from services.kpi_reader import read_leaderboard, team_exists
from services.kpis.comparison import NUMERIC_KPIS
from services.kpis.periods import PeriodKind
from services.quota_store import read_month_quotas

router = APIRouter(tags=["leaderboard"])


@router.get(
    "/leaderboard",
    summary="Leaderboard of managers",
    responses={
        404: {"model": ErrorDetail, "description": "the team was never seen"},
        422: {"description": "bad period label or unknown sort KPI"},
    },
)
async def read_manager_leaderboard(
    period: PeriodDep,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    team_id: LeaderboardTeamDep,
    sort: Annotated[
        str,
        Query(
            description="numeric KPI to rank by, best (highest) first", json_schema_extra={"enum": list(NUMERIC_KPIS)}
        ),
    ] = "revenue",
    limit: Annotated[int | None, Query(ge=1, le=10_000, description="at most this many rows")] = None,
) -> Leaderboard:
    """Every manager (or a team's managers) with their KPIs over the period, ranked by one KPI.

    A manager's figures are those of the manager scope (all events attributed to them), also
    when the ranking is restricted to a team. Undefined ratios rank last; ties go by manager id.
    Month periods include each manager's quota and quota_attainment (rank by it with
    `sort=quota_attainment`); other periods have them null. A team lead or team display sees
    its own team's ranking; a manager token may not read the leaderboard.
    """
    if sort not in NUMERIC_KPIS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"cannot rank by {sort!r}; choose one of {list(NUMERIC_KPIS)}"
        )
    if team_id is not None and not await team_exists(redis, keys, team_id):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"unknown team {team_id!r}: no event has carried it; GET /api/v1/teams lists the known teams",
        )
    quotas = await read_month_quotas(redis, keys, period.label) if period.kind is PeriodKind.MONTH else None
    rows = await read_leaderboard(redis, keys, period, sort=sort, team_id=team_id, limit=limit, quotas=quotas)
    return Leaderboard(
        period=PeriodInfo.of(period), team_id=team_id, sort=sort, currency=settings.business.currency, rows=rows
    )
