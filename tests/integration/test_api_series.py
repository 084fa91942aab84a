"""KPI series over REST: one point per day or month, read from the right buckets, with 404/422 answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from services.auth import Role
from services.settings import Settings
from services.token_store import TokenStore
from services.topics import AuthKeys
from tests.integration.api_harness import isolated_settings

if TYPE_CHECKING:
    from tests.integration.api_harness import ApiFactory, RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration


@pytest.fixture
def api_settings(redis_url: str) -> Settings:
    """Access control off: these tests are about the figures (the last one turns tokens on)."""
    return isolated_settings(redis_url, api={"auth": "off"})


async def get(api: RunningApi, url: str, status: int = 200, **params: str) -> dict[str, Any]:
    response = await api.http.get(url, params=params)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_daily_series_defaults_to_the_last_30_days_ending_today(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01"})
    await api.write_bucket("m:alice", "day", "2026-11-27", {"calls": 5, "revenue": 12_500_0000})
    await api.write_bucket("m:alice", "day", "2026-10-29", {"calls": 3})
    await api.write_bucket("m:alice", "day", "2026-10-28", {"calls": 1000})  # 31 days back: outside

    body = await get(api, "/api/v1/kpis/managers/alice/series")

    assert body["granularity"] == "day"
    assert (body["start"], body["end"]) == ("2026-10-29", "2026-11-28")
    labels = [point["period"]["label"] for point in body["points"]]
    assert len(labels) == 30 and labels[0] == "2026-10-29" and labels[-1] == "2026-11-27"
    calls = {point["period"]["label"]: point["kpis"]["calls"] for point in body["points"]}
    assert calls["2026-11-27"] == 5 and calls["2026-10-29"] == 3
    assert sum(calls.values()) == 8
    assert body["points"][-1]["kpis"]["revenue"] == "12500.0000"
    assert body["scope"] == {"kind": "manager", "id": "alice", "token": "m:alice"}


async def test_explicit_range_and_monthly_series_with_quota(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01"})
    await api.write_bucket("t:team-01", "day", "2026-11-02", {"meetings": 2})
    await api.write_bucket("t:team-01", "month", "2026-10", {"revenue": 40_000_0000})
    await api.write_bucket("t:team-01", "month", "2026-11", {"revenue": 10_000_0000})
    await api.write_bucket("c", "month", "2026-11", {"revenue": 10_000_0000})
    await api.redis.hset(api.keys.quotas("2026-11"), mapping={"alice": str(20_000_0000)})

    days = await get(api, "/api/v1/kpis/teams/team-01/series", **{"from": "2026-11-01", "to": "2026-11-04"})
    months = await get(api, "/api/v1/kpis/company/series", granularity="month", **{"from": "2026-10-15"})

    assert [(p["period"]["label"], p["kpis"]["meetings"]) for p in days["points"]] == [
        ("2026-11-01", 0),
        ("2026-11-02", 2),
        ("2026-11-03", 0),
    ]
    assert [p["period"]["label"] for p in months["points"]] == ["2026-10", "2026-11"]
    november = months["points"][1]["kpis"]
    assert (november["revenue"], november["quota"], november["quota_attainment"]) == (
        "10000.0000",
        "20000.0000",
        "0.500000",
    )


async def test_unknown_scope_and_bad_ranges_are_refused(api: RunningApi) -> None:
    await api.add_managers({"alice": None})

    assert "unknown manager 'nobody'" in (await get(api, "/api/v1/kpis/managers/nobody/series", 404))["detail"]
    backwards = await get(api, "/api/v1/kpis/company/series", 422, **{"from": "2026-11-10", "to": "2026-11-10"})
    too_long = await get(api, "/api/v1/kpis/company/series", 422, **{"from": "2020-01-01"})
    assert "empty range" in backwards["detail"]
    assert "more than 400 days" in too_long["detail"]


async def test_a_manager_token_reads_its_own_series_only(api_factory: ApiFactory) -> None:
    async with api_factory(api={"auth": "tokens"}) as api:
        await api.add_managers({"alice": "team-01", "bob": "team-01"})
        store = TokenStore(api.redis, AuthKeys.from_settings(api.settings))
        token, _ = await store.create(
            name="alice's laptop", role=Role.MANAGER, manager_id="alice", now=datetime.now(UTC)
        )
        bearer = {"Authorization": f"Bearer {token}"}

        own = await api.http.get("/api/v1/kpis/managers/alice/series", headers=bearer)
        other = await api.http.get("/api/v1/kpis/managers/bob/series", headers=bearer)
        company = await api.http.get("/api/v1/kpis/company/series", headers=bearer)
        anonymous = await api.http.get("/api/v1/kpis/managers/alice/series", headers={"Authorization": ""})

    assert own.status_code == 200, own.text
    assert (other.status_code, company.status_code, anonymous.status_code) == (403, 403, 401)
