"""The business figures behind the KPI gauges of /metrics: a few KPIs of small scopes (the
company, each team, optionally the managers up to a limit) for today, this month and the
rolling 24 h, with the open pipeline and the month's forecast.

They are read with the same functions as the REST API (``services.kpi_reader``) and derived
with the same pure core (``services.kpis.measures``), so a gauge always equals the number the
API answers for the same scope and period at the same moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from redis.asyncio import Redis

from services.kpi_reader import (
    list_managers,
    list_teams_with_managers,
    read_current_measures_many,
    read_period_measures_many,
    read_window_measures_many,
)
from services.kpis.measures import KpiValues, PipelineValues, decode_hash, derive_kpis, derive_pipeline, with_quota
from services.kpis.periods import PeriodKind, local_date, month_key, period_of
from services.kpis.windows import WindowLength, window_ending
from services.quotas import scope_quota_units
from services.settings import Settings
from services.topics import RedisKeys, ScopeKind, scope_token

PERIOD_TODAY = "today"
PERIOD_MONTH = "month"
PERIOD_ROLLING_24H = "rolling_24h"
PERIODS = (PERIOD_TODAY, PERIOD_MONTH, PERIOD_ROLLING_24H)
"""The ``period`` label values of the gauges: the local day, the local month, the last 24 h."""


@dataclass(frozen=True)
class ScopeFigures:
    """One scope's KPIs per period label, its open pipeline and its month forecast."""

    kind: ScopeKind
    team_id: str
    manager_id: str
    kpis: dict[str, KpiValues]
    pipeline: PipelineValues
    forecast: Decimal
    """This month's revenue plus the weighted open pipeline (as ``GET /pipeline/...``)."""


@dataclass(frozen=True)
class BusinessFigures:
    """Every scope's figures from one read, and how many managers were left out by the limit."""

    day: date
    scopes: list[ScopeFigures] = field(default_factory=list)
    managers_omitted: int = 0


async def _month_quotas(
    redis: Redis, keys: RedisKeys, month: str, team_managers: dict[str, list[str]]
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """The month's quotas by manager and, per team, the managers counting for its quota this month."""
    teams = list(team_managers)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.quotas(month))
        for team in teams:
            pipe.smembers(keys.team_month_managers(team, month))
        quotas, *members = await pipe.execute()
    month_members = {
        team: sorted(m.decode() if isinstance(m, bytes) else m for m in raw)
        for team, raw in zip(teams, members, strict=True)
    }
    return decode_hash(quotas), month_members


async def read_business_figures(redis: Redis, keys: RedisKeys, settings: Settings, now: datetime) -> BusinessFigures:
    """The figures of the company, each team and (when enabled) the first managers by id, at ``now``."""
    metrics = settings.metrics
    today = local_date(now, settings.business.zone)
    team_managers = await list_teams_with_managers(redis, keys)
    company_kind: ScopeKind = "company"
    team_kind: ScopeKind = "team"
    scopes: list[tuple[ScopeKind, str]] = [(company_kind, "")] + [(team_kind, team) for team in team_managers]
    omitted = 0
    if metrics.kpi_managers:
        managers = await list_managers(redis, keys)
        omitted = max(0, len(managers) - metrics.kpi_manager_limit)
        manager_kind: ScopeKind = "manager"
        scopes += [(manager_kind, manager) for manager in managers[: metrics.kpi_manager_limit]]
    tokens = [scope_token(kind, scope_id) for kind, scope_id in scopes]

    day, month = period_of(PeriodKind.DAY, today), period_of(PeriodKind.MONTH, today)
    period_measures = await read_period_measures_many(
        redis, keys, [(token, period) for token in tokens for period in (day, month)]
    )
    rolling = await read_window_measures_many(
        redis, keys, [(token, window_ending(WindowLength.DAY, now)) for token in tokens]
    )
    current = await read_current_measures_many(redis, keys, tokens)
    quotas, month_members = await _month_quotas(redis, keys, month_key(today), team_managers)
    probabilities = {stage.name: stage.probability for stage in settings.business.funnel}

    figures: list[ScopeFigures] = []
    for index, (kind, scope_id) in enumerate(scopes):
        month_kpis = with_quota(
            derive_kpis(period_measures[2 * index + 1]),
            scope_quota_units(kind, scope_id, quotas, month_members.get(scope_id, ()) if kind == "team" else ()),
        )
        pipeline = derive_pipeline(current[index], probabilities)
        figures.append(
            ScopeFigures(
                kind=kind,
                team_id=scope_id if kind == "team" else "",
                manager_id=scope_id if kind == "manager" else "",
                kpis={
                    PERIOD_TODAY: derive_kpis(period_measures[2 * index]),
                    PERIOD_MONTH: month_kpis,
                    PERIOD_ROLLING_24H: derive_kpis(rolling.measures[index]),
                },
                pipeline=pipeline,
                forecast=month_kpis.revenue + pipeline.weighted_pipeline,
            )
        )
    return BusinessFigures(day=today, scopes=figures, managers_omitted=omitted)
