"""REST reads of the KPI state: periods sum the right buckets, previous period, change,
leaderboard, pipeline, directory, and the 404/422 answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.integration.api_harness import ApiFactory, RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration

# Each bucket of m:alice holds a distinct power of two as its call count, so the total of a
# period tells exactly which buckets were summed. Month buckets are written independently of
# the day buckets: a month period must read its month bucket, not the days.
ALICE_DAYS = {
    "2026-09-27": 1 << 20,
    "2026-10-29": 1 << 18,
    "2026-10-30": 1,
    "2026-10-31": 2,
    "2026-11-16": 4,  # Monday of W47
    "2026-11-22": 8,  # Sunday of W47
    "2026-11-23": 16,  # Monday of W48
    "2026-11-26": 32,
    "2026-11-27": 64,  # "today" (the tests' clock)
    "2026-11-29": 128,  # Sunday of W48
    "2026-11-30": 256,  # Monday of W49
    "2026-12-01": 512,
}
ALICE_MONTHS = {
    "2025-11": 1 << 16,
    "2025-12": 1 << 17,
    "2026-01": 1024,
    "2026-07": 2048,
    "2026-09": 4096,
    "2026-10": 8192,
    "2026-11": 16384,
    "2026-12": 32768,
}


async def write_alice(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01", "bob": "team-01", "carol": "team-02", "dave": None})
    for day, calls in ALICE_DAYS.items():
        await api.write_bucket("m:alice", "day", day, {"calls": calls})
    for month, calls in ALICE_MONTHS.items():
        await api.write_bucket("m:alice", "month", month, {"calls": calls})


async def get_ok(api: RunningApi, url: str, **params: str) -> dict[str, Any]:
    response = await api.http.get(url, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("kind", "at", "label", "start", "end", "calls", "previous_label", "previous_calls"),
    [
        ("day", "2026-11-27", "2026-11-27", "2026-11-27", "2026-11-28", 64, "2026-11-26", 32),
        ("week", "2026-W48", "2026-W48", "2026-11-23", "2026-11-30", 16 + 32 + 64 + 128, "2026-W47", 4 + 8),
        ("month", "2026-11", "2026-11", "2026-11-01", "2026-12-01", 16384, "2026-10", 8192),
        ("quarter", "2026-Q4", "2026-Q4", "2026-10-01", "2027-01-01", 8192 + 16384 + 32768, "2026-Q3", 2048 + 4096),
        (
            "year",
            "2026",
            "2026",
            "2026-01-01",
            "2027-01-01",
            1024 + 2048 + 4096 + 8192 + 16384 + 32768,
            "2025",
            3 << 16,
        ),
        (
            "range",
            "2026-10-30..2026-12-02",
            "2026-10-30..2026-12-02",
            "2026-10-30",
            "2026-12-02",
            1 + 2 + 16384 + 512,
            "2026-09-27..2026-10-30",
            (1 << 20) + (1 << 18),
        ),
    ],
)
async def test_each_period_kind_sums_its_buckets(
    api: RunningApi,
    kind: str,
    at: str,
    label: str,
    start: str,
    end: str,
    calls: int,
    previous_label: str,
    previous_calls: int,
) -> None:
    await write_alice(api)

    body = await get_ok(api, "/api/v1/kpis/managers/alice", period=kind, at=at)

    assert body["scope"] == {"kind": "manager", "id": "alice", "token": "m:alice"}
    assert body["period"] == {"kind": kind, "label": label, "start": start, "end": end}
    assert body["kpis"]["calls"] == calls
    assert body["previous"]["label"] == previous_label
    assert body["previous"]["kpis"]["calls"] == previous_calls
    assert body["change"]["calls"]["delta"] == calls - previous_calls


async def test_default_period_is_the_one_containing_today(api: RunningApi) -> None:
    await write_alice(api)

    day = await get_ok(api, "/api/v1/kpis/managers/alice")
    week = await get_ok(api, "/api/v1/kpis/managers/alice", period="week")

    assert day["period"]["label"] == "2026-11-27"
    assert day["kpis"]["calls"] == 64
    assert week["period"]["label"] == "2026-W48"


async def test_default_today_follows_the_business_time_zone(api_factory: ApiFactory) -> None:
    # 12:00 UTC on the 27th is already the 28th in Auckland (UTC+13 in November).
    clock = lambda: datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # noqa: E731
    async with api_factory(business={"timezone": "Pacific/Auckland"}, clock=clock) as api:
        body = await get_ok(api, "/api/v1/kpis/company")
    assert body["period"]["label"] == "2026-11-28"


async def test_derived_kpis_previous_period_and_change(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01"})
    await api.write_bucket(
        "m:alice",
        "day",
        "2026-11-27",
        {"calls": 12, "deals_won": 3, "deals_lost": 1, "revenue": 125_000_000, "stage:qualified": 2, "lost:price": 1},
    )
    await api.write_bucket("m:alice", "day", "2026-11-26", {"calls": 8, "deals_won": 1, "deals_lost": 1})

    body = await get_ok(api, "/api/v1/kpis/managers/alice", period="day", at="2026-11-27")

    kpis = body["kpis"]
    assert body["currency"] == "USD"
    assert kpis["revenue"] == "12500.0000"
    assert kpis["win_rate"] == "0.750000"
    assert kpis["avg_deal_size"] == "4166.6667"
    assert kpis["stage_entries"] == {"qualified": 2}
    assert kpis["lost_by_reason"] == {"price": 1}
    assert body["previous"]["kpis"]["win_rate"] == "0.500000"
    change = body["change"]
    assert change["calls"] == {"delta": 4, "percent": "50.00"}
    assert change["deals_won"] == {"delta": 2, "percent": "200.00"}
    assert change["revenue"] == {"delta": "12500.0000", "percent": None}  # previous revenue is 0
    assert change["win_rate"] == {"delta": "0.250000", "percent": "50.00"}
    assert change["avg_cycle_days"] == {"delta": None, "percent": None}  # undefined in both periods


async def test_team_and_company_read_their_own_scopes(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01"})
    await api.write_bucket("t:team-01", "day", "2026-11-27", {"meetings": 5})
    await api.write_bucket("c", "day", "2026-11-27", {"meetings": 9})
    await api.write_bucket("c", "month", "2026-11", {"meetings": 40})

    team = await get_ok(api, "/api/v1/kpis/teams/team-01", at="2026-11-27")
    company = await get_ok(api, "/api/v1/kpis/company", at="2026-11-27")
    company_month = await get_ok(api, "/api/v1/kpis/company", period="month")

    assert team["scope"] == {"kind": "team", "id": "team-01", "token": "t:team-01"}
    assert team["kpis"]["meetings"] == 5
    assert company["scope"]["token"] == "c"
    assert company["kpis"]["meetings"] == 9
    assert company_month["kpis"]["meetings"] == 40


async def test_unknown_scopes_answer_404_with_the_id(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01"})

    manager = await api.http.get("/api/v1/kpis/managers/nobody")
    team = await api.http.get("/api/v1/kpis/teams/team-99")
    pipeline = await api.http.get("/api/v1/pipeline/managers/nobody")

    assert manager.status_code == 404
    assert "unknown manager 'nobody'" in manager.json()["detail"]
    assert team.status_code == 404
    assert "unknown team 'team-99'" in team.json()["detail"]
    assert pipeline.status_code == 404


@pytest.mark.parametrize(
    ("period", "at", "message"),
    [
        ("day", "2026-13-01", "'2026-13-01' is not a day label; write it like 2026-11-27"),
        ("week", "2026-48", "is not a week label; write it like 2026-W48"),
        ("quarter", "2026-Q5", "'2026-Q5' is not a quarter label; write it like 2026-Q4"),
        ("range", "", "a range is written FROM..TO"),
        ("range", "2026-11-15..2026-11-01", "empty day range"),
    ],
)
async def test_bad_period_labels_answer_422_with_the_reason(
    api: RunningApi, period: str, at: str, message: str
) -> None:
    response = await api.http.get("/api/v1/kpis/company", params={"period": period, "at": at})

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("bad period: ")
    assert message in detail


async def test_unknown_period_kind_answers_422(api: RunningApi) -> None:
    response = await api.http.get("/api/v1/kpis/company", params={"period": "fortnight"})

    assert response.status_code == 422
    assert "fortnight" in response.text


async def test_leaderboard_ranks_by_the_chosen_kpi(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01", "bob": "team-01", "carol": "team-02", "dave": None})
    day = "2026-11-27"
    await api.write_bucket("m:alice", "day", day, {"revenue": 50_000, "calls": 3, "deals_won": 1})
    await api.write_bucket("m:bob", "day", day, {"revenue": 90_000, "calls": 1, "deals_won": 1, "deals_lost": 3})
    await api.write_bucket("m:carol", "day", day, {"revenue": 50_000, "calls": 7, "deals_won": 2})
    # dave has no activity today: all zeros, undefined win rate.

    by_revenue = await get_ok(api, "/api/v1/leaderboard", at=day)
    by_calls = await get_ok(api, "/api/v1/leaderboard", at=day, sort="calls")
    by_win_rate = await get_ok(api, "/api/v1/leaderboard", at=day, sort="win_rate")
    team = await get_ok(api, "/api/v1/leaderboard", at=day, team_id="team-01")
    top = await get_ok(api, "/api/v1/leaderboard", at=day, limit="2")

    # alice and carol tie on revenue: carol won more deals.
    assert [row["manager_id"] for row in by_revenue["rows"]] == ["bob", "carol", "alice", "dave"]
    assert [row["rank"] for row in by_revenue["rows"]] == [1, 2, 3, 4]
    assert [row["active"] for row in by_revenue["rows"]] == [True, True, True, False]  # dave has nothing
    assert by_revenue["rows"][0]["kpis"]["revenue"] == "9.0000"
    assert by_revenue["period"]["label"] == day
    assert by_revenue["sort"] == "revenue"
    assert [row["manager_id"] for row in by_calls["rows"]] == ["carol", "alice", "bob", "dave"]
    # alice and carol both won all they closed: carol won more; undefined last.
    assert [row["manager_id"] for row in by_win_rate["rows"]] == ["carol", "alice", "bob", "dave"]
    assert [row["manager_id"] for row in team["rows"]] == ["bob", "alice"]
    assert team["team_id"] == "team-01"
    assert [row["manager_id"] for row in top["rows"]] == ["bob", "carol"]


async def test_leaderboard_managers_equal_on_every_key_share_a_rank(api: RunningApi) -> None:
    await api.add_managers({"ann": "team-01", "bo": "team-01", "cy": "team-01", "di": "team-01"})
    day = "2026-11-27"
    await api.write_bucket("m:ann", "day", day, {"calls": 2})
    await api.write_bucket("m:bo", "day", day, {"calls": 5})
    await api.write_bucket("m:cy", "day", day, {"calls": 2})

    board = await get_ok(api, "/api/v1/leaderboard", at=day)  # by revenue: nobody has any

    rows = [(row["manager_id"], row["rank"], row["tied"], row["active"]) for row in board["rows"]]
    assert rows == [("bo", 1, False, True), ("ann", 2, True, True), ("cy", 2, True, True), ("di", 4, False, False)]


async def test_leaderboard_rejects_unknown_team_and_sort(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01"})

    team = await api.http.get("/api/v1/leaderboard", params={"team_id": "team-99"})
    sort = await api.http.get("/api/v1/leaderboard", params={"sort": "stage_entries"})

    assert team.status_code == 404
    assert "unknown team 'team-99'" in team.json()["detail"]
    assert sort.status_code == 422
    assert "cannot rank by 'stage_entries'" in sort.json()["detail"]


async def test_pipeline_weights_open_deals_and_forecasts_the_month(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01"})
    await api.write_current(
        "m:alice",
        {"pipe_n:new": 2, "pipe_amt:new": 10_000_000, "pipe_n:proposal": 1, "pipe_amt:proposal": 40_000_000},
    )
    await api.write_bucket("m:alice", "month", "2026-11", {"revenue": 5_000_000})

    body = await get_ok(api, "/api/v1/pipeline/managers/alice")

    pipeline = body["pipeline"]
    assert pipeline["open_deals"] == 3
    assert pipeline["amount"] == "5000.0000"
    assert pipeline["stages"]["new"] == {
        "open_deals": 2,
        "amount": "1000.0000",
        "probability": "0.1",
        "weighted": "100.0000",
    }
    assert pipeline["stages"]["proposal"]["weighted"] == "2000.0000"
    assert pipeline["stages"]["negotiation"]["open_deals"] == 0
    assert pipeline["weighted_pipeline"] == "2100.0000"
    assert body["month"] == "2026-11"
    assert body["month_revenue"] == "500.0000"
    assert body["forecast"] == "2600.0000"
    company = await get_ok(api, "/api/v1/pipeline/company")
    assert company["pipeline"]["open_deals"] == 0
    team = await get_ok(api, "/api/v1/pipeline/teams/team-01")
    assert team["scope"]["token"] == "t:team-01"


async def test_directory_lists_managers_and_teams(api: RunningApi) -> None:
    await api.add_managers({"bob": "team-01", "alice": "team-01", "carol": "team-02", "dave": None})

    managers = await get_ok(api, "/api/v1/managers")
    teams = await get_ok(api, "/api/v1/teams")

    assert managers == {"managers": ["alice", "bob", "carol", "dave"]}
    assert teams == {
        "teams": [
            {"team_id": "team-01", "managers": ["alice", "bob"]},
            {"team_id": "team-02", "managers": ["carol"]},
        ]
    }


async def test_openapi_documents_every_route(api: RunningApi) -> None:
    spec = await get_ok(api, "/openapi.json")
    docs = await api.http.get("/docs")

    assert docs.status_code == 200
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
            assert operation.get("description"), f"{method.upper()} {path} has no description"
    undocumented = [
        name
        for name, schema in spec["components"]["schemas"].items()
        if not schema.get("description")
        and schema.get("type") == "object"
        and name not in ("HTTPValidationError", "ValidationError")
    ]
    assert undocumented == []


async def test_a_query_parameter_the_route_does_not_take_answers_422(api: RunningApi) -> None:
    await api.add_managers({"ann": "team-01"})

    ignored = await api.http.get("/api/v1/kpis/managers/ann/series", params={"days": "3"})
    known = await api.http.get("/api/v1/kpis/managers/ann/series", params={"from": "2026-11-01", "to": "2026-11-04"})

    assert ignored.status_code == 422
    problem = ignored.json()["detail"][0]
    assert problem["loc"] == ["query", "days"]
    assert "from" in problem["msg"] and "granularity" in problem["msg"]
    assert known.status_code == 200
    assert len(known.json()["points"]) == 3
