"""Running a report: read the directory, plan, read the KPI state in one cut, assemble (a thin shell).

The reads are the KPI reader's (``services.kpi_reader``) and the quota store's, the ones behind the
KPI, funnel, leaderboard and pipeline routes, so a report shows the screen's numbers.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import date

from redis.asyncio import Redis

from services.kpi_reader import list_managers, list_team_managers, list_teams, read_periods_and_current
from services.quota_store import read_scope_quotas
from services.reports.assemble import ReadState, build_table
from services.reports.planner import Directory, plan_report
from services.reports.table import Table
from services.schemas.reports import GroupBy, ReportSpec
from services.settings import Settings
from services.topics import RedisKeys, ScopeKind


async def read_directory(redis: Redis, keys: RedisKeys, spec: ReportSpec) -> Directory:
    """The managers or teams a manager or team grouping lists, below the report's scope."""
    if spec.group_by is GroupBy.MANAGER:
        if spec.scope.kind == "company":
            return Directory(managers=await list_managers(redis, keys))
        if spec.scope.kind == "team":
            return Directory(managers=await list_team_managers(redis, keys, spec.scope.id))
    if spec.group_by is GroupBy.TEAM:
        return Directory(teams=await list_teams(redis, keys))
    return Directory()


async def run_report(redis: Redis, keys: RedisKeys, settings: Settings, spec: ReportSpec, *, today: date) -> Table:
    """The table of a report, ``today`` being the local date in the business time zone.

    Raises ``ReportPlanError`` (a ValueError) when the spec cannot be read as asked.
    """
    business = settings.business
    directory = await read_directory(redis, keys, spec)
    plan = plan_report(spec, today=today, directory=directory, stages=business.stage_names)
    reads = plan.reads()
    measures, current = await read_periods_and_current(
        redis, keys, [(read.token, read.period) for read in reads], plan.pipeline_scopes
    )
    months_by_scope: dict[tuple[ScopeKind, str], list[str]] = defaultdict(list)
    for kind, scope_id, month in plan.quota_reads():
        months_by_scope[(kind, scope_id)].append(month)
    scopes = list(months_by_scope)
    found = await asyncio.gather(
        *(
            read_scope_quotas(redis, keys, kind, scope_id, months_by_scope[(kind, scope_id)])
            for kind, scope_id in scopes
        )
    )
    quotas = {
        (kind, scope_id, month): units
        for (kind, scope_id), units_by_month in zip(scopes, found, strict=True)
        for month, units in zip(months_by_scope[(kind, scope_id)], units_by_month, strict=True)
    }
    state = ReadState(
        measures={(read.token, read.period): values for read, values in zip(reads, measures, strict=True)},
        current=dict(zip(plan.pipeline_scopes, current, strict=True)),
        quotas=quotas,
    )
    probabilities = {stage.name: stage.probability for stage in business.funnel}
    return build_table(plan, state, probabilities=probabilities, currency=business.currency)
