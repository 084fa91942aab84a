"""The KPI gauges of /metrics: equal to the REST API's answers for the same scope and period,
managers behind a setting with a limit, cached briefly, and clean for Debian's ``promtool check metrics``."""

from __future__ import annotations

import asyncio
import subprocess
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from services.kpis.periods import day_key, month_key
from services.kpis.windows import WindowLength, stored_reads, window_ending
from services.topics import scope_token
from tests.integration.api_harness import FIXED_NOW

if TYPE_CHECKING:
    from tests.integration.api_harness import ApiFactory, RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

DAY = day_key(FIXED_NOW.date())
MONTH = month_key(FIXED_NOW.date())
MONEY = 10_000  # units per currency unit (services.schemas.events.MONEY_SCALE)


def labels(scope: str, period: str | None = None, team: str = "", manager: str = "", **more: str) -> tuple[Any, ...]:
    values = {"scope": scope, "team": team, "manager": manager, **more}
    if period is not None:
        values["period"] = period
    return tuple(sorted(values.items()))


async def seed(api: RunningApi) -> None:
    """A company of two teams: today's, the month's, the last 24 h's buckets, an open pipeline, quotas."""
    await api.add_managers({"ann": "north", "bob": "north", "cid": "south"})
    await api.redis.sadd(api.keys.team_month_managers("north", MONTH), "ann", "bob")
    await api.redis.hset(api.keys.quotas(MONTH), mapping={"ann": str(1000 * MONEY), "bob": str(1000 * MONEY)})
    rolling = next(read for read in stored_reads(window_ending(WindowLength.DAY, FIXED_NOW)) if read[2] is None)
    for scope, factor in ((scope_token("company", ""), 3), (scope_token("team", "north"), 2), ("m:ann", 1)):
        await api.write_bucket(scope, "day", DAY, {"calls": 4 * factor, "deals_won": factor, "deals_lost": 1})
        await api.write_bucket(
            scope,
            "month",
            MONTH,
            {"calls": 40 * factor, "meetings": 7, "deals_won": 3 * factor, "deals_lost": 1, "revenue": 500 * MONEY},
        )
        await api.write_bucket(scope, rolling[0], rolling[1], {"calls": 9 * factor})
        await api.write_current(scope, {"pipe_n:proposal": factor, "pipe_amt:proposal": 200 * MONEY * factor})


async def rest(api: RunningApi, path: str, **params: str) -> dict[str, Any]:
    response = await api.http.get(f"/api/v1/{path}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_gauges_equal_the_rest_api_for_each_scope_and_period(api: RunningApi) -> None:
    await seed(api)
    samples = await api.metric_samples()

    for scope, team, path in (("company", "", "company"), ("team", "north", "teams/north")):
        day = (await rest(api, f"kpis/{path}", period="day"))["kpis"]
        month = (await rest(api, f"kpis/{path}", period="month"))["kpis"]
        rolling = (await rest(api, f"kpis/{path}", window="24h"))["kpis"]
        pipeline = await rest(api, f"pipeline/{path}")
        for period, kpis in (("today", day), ("month", month), ("rolling_24h", rolling)):
            key = labels(scope, period, team=team)
            assert samples[("crm_pulse_kpi_calls", key)] == kpis["calls"]
            assert samples[("crm_pulse_kpi_deals_won", key)] == kpis["deals_won"]
            assert samples[("crm_pulse_kpi_revenue", key)] == float(Decimal(kpis["revenue"]))
            if kpis["win_rate"] is None:
                assert ("crm_pulse_kpi_win_ratio", key) not in samples
            else:
                assert samples[("crm_pulse_kpi_win_ratio", key)] == float(Decimal(str(kpis["win_rate"])))
        month_key_labels = labels(scope, "month", team=team)
        assert samples[("crm_pulse_kpi_forecast", month_key_labels)] == float(Decimal(str(pipeline["forecast"])))
        assert samples[("crm_pulse_pipeline_weighted_amount", labels(scope, team=team))] == float(
            Decimal(str(pipeline["pipeline"]["weighted_pipeline"]))
        )
        if month["quota_attainment"] is not None:
            assert samples[("crm_pulse_kpi_quota_attainment_ratio", month_key_labels)] == float(
                Decimal(str(month["quota_attainment"]))
            )

    # The seeded numbers themselves, so the comparison above is not between two empty answers.
    assert samples[("crm_pulse_kpi_calls", labels("company", "today"))] == 12
    assert samples[("crm_pulse_kpi_calls", labels("company", "rolling_24h"))] == 27
    assert samples[("crm_pulse_kpi_calls", labels("team", "month", team="north"))] == 80
    assert samples[("crm_pulse_kpi_quota_attainment_ratio", labels("team", "month", team="north"))] == 0.25
    assert samples[("crm_pulse_pipeline_open_deals", labels("team", team="north", stage="proposal"))] == 2
    assert samples[("crm_pulse_kpi_currency_info", (("currency", "USD"),))] == 1
    assert not [key for key in samples if key[0].startswith("crm_pulse_kpi") and ("scope", "manager") in key[1]]


async def test_managers_behind_a_setting_with_a_limit(api_factory: ApiFactory) -> None:
    async with api_factory(metrics={"kpi_managers": True, "kpi_manager_limit": 2}) as api:
        await seed(api)
        samples = await api.metric_samples()

    managers = {dict(key[1])["manager"] for key in samples if key[0] == "crm_pulse_kpi_calls" and key[1]}
    assert managers == {"", "ann", "bob"}  # sorted by id, the first two; cid is counted as omitted
    assert samples[("crm_pulse_kpi_managers_omitted", ())] == 1
    assert samples[("crm_pulse_kpi_calls", labels("manager", "today", manager="ann"))] == 4
    assert samples[("crm_pulse_kpi_quota_attainment_ratio", labels("manager", "month", manager="ann"))] == 0.5


async def test_scrapes_within_the_cache_period_share_one_read(api_factory: ApiFactory) -> None:
    async with api_factory(metrics={"kpi_cache_s": 3600}) as api:
        await seed(api)
        first = await api.metric_samples()
        await api.write_bucket(scope_token("company", ""), "day", DAY, {"calls": 99})
        cached = await api.metric_samples()
    async with api_factory(metrics={"kpi_cache_s": 0}) as api:
        await seed(api)
        await api.metric_samples()
        await api.write_bucket(scope_token("company", ""), "day", DAY, {"calls": 99})
        fresh = await api.metric_samples()

    key = ("crm_pulse_kpi_calls", labels("company", "today"))
    assert first[key] == cached[key] == 12
    assert fresh[key] == 99


async def test_promtool_finds_the_real_metrics_output_clean(api: RunningApi) -> None:
    await seed(api)
    await api.redis.hset(api.keys.worker_stats, mapping={"processed": "10", "rejected:too_old": "1"})
    await api.redis.hset(api.keys.consumer_lag, mapping={"crm.events:0": "5"})
    response = await api.http.get("/metrics")
    assert "crm_pulse_kpi_revenue{" in response.text

    checked = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=response.content,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    assert not (checked.stdout + checked.stderr).strip(), (checked.stdout + checked.stderr).decode()
