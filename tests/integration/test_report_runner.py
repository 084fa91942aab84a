"""A report run on real Redis shows the KPI, funnel and pipeline routes' numbers for the same scope and period."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from services.kpis.periods import PeriodKind
from services.reports.runner import run_report
from services.schemas.reports import GroupBy, ReportPeriod, ReportSpec
from tests.integration.api_harness import FIXED_NOW

if TYPE_CHECKING:
    from tests.integration.api_harness import RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration


async def test_grouped_reports_equal_the_kpi_routes(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01", "bob": "team-01"})
    for scope, calls, won, revenue in (
        ("m:alice", 3, 2, 50_000_000),
        ("m:bob", 5, 1, 7_500_000),
        ("c", 8, 3, 57_500_000),
    ):
        await api.write_bucket(scope, "month", "2026-11", {"calls": calls, "deals_won": won, "revenue": revenue})
        await api.write_bucket(scope, "day", "2026-10-31", {"calls": 1})
    await api.write_bucket("c", "month", "2026-11", {"calls": 8, "stage:new": 4, "stage:qualified": 1, "deals_won": 3})
    await api.write_current("c", {"pipe_n:new": 2, "pipe_amt:new": 40_000_000})
    await api.redis.hset(api.keys.quotas("2026-11"), mapping={"alice": "100000000"})
    today = FIXED_NOW.date()
    month = ReportPeriod(kind=PeriodKind.MONTH, at="2026-11")
    spec = ReportSpec(
        group_by=GroupBy.MANAGER,
        period=month,
        kpis=("calls", "revenue", "quota_attainment"),
        comparison="previous_period",
    )
    table = await run_report(api.redis, api.keys, api.settings, spec, today=today)
    for row in table.rows:
        screen = (
            await api.http.get(f"/api/v1/kpis/managers/{row['key']}", params={"period": "month", "at": "2026-11"})
        ).json()
        assert row["calls"] == screen["kpis"]["calls"]
        assert row["revenue"] == Decimal(screen["kpis"]["revenue"])
        attainment = screen["kpis"]["quota_attainment"]
        assert row["quota_attainment"] == (Decimal(attainment) if attainment is not None else None)
        assert row["compare:calls"] == screen["previous"]["kpis"]["calls"]
    assert [row["key"] for row in table.rows] == ["alice", "bob"]

    funnel_spec = ReportSpec(group_by=GroupBy.STAGE, period=month, kpis=("stage_entries", "drop_off", "open_deals"))
    funnel_table = await run_report(api.redis, api.keys, api.settings, funnel_spec, today=today)
    screen_funnel = (await api.http.get("/api/v1/funnel/company", params={"period": "month", "at": "2026-11"})).json()
    pipeline = (await api.http.get("/api/v1/pipeline/company")).json()
    for row, stage in zip(funnel_table.rows, screen_funnel["funnel"]["stages"], strict=True):
        assert (row["key"], row["stage_entries"]) == (stage["stage"], stage["entries"])
        assert row["drop_off"] == (Decimal(stage["drop_off"]) if stage["drop_off"] is not None else None)
        assert row["open_deals"] == pipeline["pipeline"]["stages"][stage["stage"]]["open_deals"]
    assert funnel_table.rows[0]["open_deals"] == 2
