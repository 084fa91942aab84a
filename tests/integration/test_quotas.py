"""Quotas against the real Kafka and Redis: set over the API and by CSV (API and CLI), quota and
attainment of a manager, a team (only its managers of the month) and the company, computed by
the real worker's state; a wipe and rebuild (streams.replay) restores them from the compacted
topic; the 4xx and 503 answers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis.asyncio import Redis

from services.kafka import admin, ensure_product_topics
from services.kpis.periods import month_key
from services.quota_store import read_quota_log
from services.settings import Settings
from services.topics import RedisKeys
from streams.replay import replay
from tests.integration.api_harness import FIXED_NOW, RunningApi, closed_kafka_address, running_api, wait_until
from tests.integration.pipeline_checks import worker_reached
from tests.integration.worker_process import running_worker

pytestmark = pytest.mark.integration

DEADLINE_S = 180.0


def months_back() -> tuple[date, date]:
    """The first days of the previous month (M) and of the month before (M-1): always in the past."""
    this_month = datetime.now(UTC).date().replace(day=1)
    month = (this_month - timedelta(days=1)).replace(day=1)
    return month, (month - timedelta(days=1)).replace(day=1)


def at(day: date, day_of_month: int, hour: int = 12) -> str:
    return datetime(day.year, day.month, day_of_month, hour, tzinfo=UTC).isoformat()


def sales_events(month: date, before: date) -> list[dict[str, Any]]:
    """alice and bob sell for north in M, carol for south; dave is north's in M-1 only (in M his event
    carries no team); erin has no event at all. One more deal of alice is lost on price."""
    events: list[dict[str, Any]] = []
    for n, (manager, team, amount) in enumerate(
        [("alice", "north", "10000.00"), ("bob", "north", "6000.00"), ("carol", "south", "3000.00")], 1
    ):
        common = {"manager_id": manager, "team_id": team, "deal_id": f"d{n}"}
        events += [
            {"event_id": f"c{n}", "type": "deal_created", "occurred_at": at(month, 3), "customer_id": f"cust{n}",
             "amount": amount, **common},
            {"event_id": f"w{n}", "type": "deal_won", "occurred_at": at(month, 12), **common},
        ]  # fmt: skip
    lost = {"manager_id": "alice", "team_id": "north", "deal_id": "d4"}
    events += [
        {"event_id": "c4", "type": "deal_created", "occurred_at": at(month, 4), "customer_id": "cust4", "amount": "1",
         **lost},
        {"event_id": "s4", "type": "deal_stage_changed", "occurred_at": at(month, 5), "stage": "qualified", **lost},
        {"event_id": "l4", "type": "deal_lost", "occurred_at": at(month, 6), "lost_reason": "price", **lost},
        {"event_id": "dave-1", "type": "call", "occurred_at": at(before, 20), "manager_id": "dave", "team_id": "north"},
        {"event_id": "dave-2", "type": "call", "occurred_at": at(month, 20), "manager_id": "dave"},
    ]  # fmt: skip
    return events


async def put(api: RunningApi, manager: str, month: str, amount: Any) -> httpx.Response:
    return await api.http.put(f"/api/v1/quotas/{manager}/{month}", json={"amount": amount})


async def import_csv(api: RunningApi, text: str, content_type: str = "text/csv") -> httpx.Response:
    return await api.http.post("/api/v1/quotas/import", content=text.encode(), headers={"content-type": content_type})


async def get_json(api: RunningApi, url: str, **params: str) -> Any:
    response = await api.http.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def set_quotas(api: RunningApi, m: str, m1: str) -> None:
    """M: alice 20,000, bob 10,000 (set to 5,000 first), carol 4,000 and erin 1,000 (CSV), dave 7,000;
    frank 500 set then deleted. M-1: dave 1,000."""
    for manager, month, amount in [
        ("alice", m, "20000.00"),
        ("bob", m, "5000"),
        ("bob", m, 10000),
        ("dave", m, "7000"),
        ("dave", m1, "1000.0"),
        ("frank", m, "500"),
    ]:
        response = await put(api, manager, month, amount)
        assert response.status_code == 200, response.text
    assert response.json() == {"manager_id": "frank", "month": m, "amount": "500.0000", "currency": "USD"}
    response = await import_csv(api, f"manager_id,month,amount\ncarol,{m},4000\nerin,{m},1000.00\n")
    assert response.status_code == 200, response.text
    assert response.json() == {"imported": 2, "months": [m]}
    assert (await api.http.delete(f"/api/v1/quotas/frank/{m}")).status_code == 204


async def assert_quota_reads(api: RunningApi, m: str, m1: str) -> dict[str, Any]:
    """Every quota figure of the scenario; returns the month reports (to compare after a rebuild)."""
    listed = await get_json(api, "/api/v1/quotas", month=m)
    assert [(q["manager_id"], q["amount"]) for q in listed["quotas"]] == [
        ("alice", "20000.0000"),
        ("bob", "10000.0000"),
        ("carol", "4000.0000"),
        ("dave", "7000.0000"),
        ("erin", "1000.0000"),
    ]
    assert listed["total"] == "42000.0000"

    reports: dict[str, Any] = {}
    for path, quota, attainment in [
        ("managers/alice", "20000.0000", "0.500000"),  # 10,000 / 20,000
        ("managers/bob", "10000.0000", "0.600000"),  # 6,000 / 10,000 (the later PUT wins)
        ("managers/dave", "7000.0000", "0.000000"),
        ("teams/north", "30000.0000", "0.533333"),  # alice + bob (not dave: no north event in M): 16,000 / 30,000
        ("teams/south", "4000.0000", "0.750000"),
        ("company", "42000.0000", "0.452381"),  # everyone with a quota, erin included: 19,000 / 42,000
    ]:
        body = await get_json(api, f"/api/v1/kpis/{path}", period="month", at=m)
        assert (body["kpis"]["quota"], body["kpis"]["quota_attainment"]) == (quota, attainment), path
        reports[path] = body

    north = reports["teams/north"]
    # M-1: dave had a north event and a quota of 1,000, and north sold nothing.
    assert north["previous"]["label"] == m1
    assert (north["previous"]["kpis"]["quota"], north["previous"]["kpis"]["quota_attainment"]) == (
        "1000.0000",
        "0.000000",
    )
    assert north["change"]["quota"] == {"delta": "29000.0000", "percent": "2900.00"}
    # Without a quota, or outside month periods, both are null.
    carol_before = await get_json(api, "/api/v1/kpis/managers/carol", period="month", at=m1)
    assert (carol_before["kpis"]["quota"], carol_before["kpis"]["quota_attainment"]) == (None, None)
    for kind, label in [("quarter", f"{m[:4]}-Q{(int(m[5:]) - 1) // 3 + 1}"), ("day", f"{m}-12"), ("year", m[:4])]:
        body = await get_json(api, "/api/v1/kpis/managers/alice", period=kind, at=label)
        assert (body["kpis"]["quota"], body["kpis"]["quota_attainment"]) == (None, None), kind

    board = await get_json(api, "/api/v1/leaderboard", period="month", at=m, sort="quota_attainment")
    assert [(r["manager_id"], r["kpis"]["quota_attainment"]) for r in board["rows"]] == [
        ("carol", "0.750000"),
        ("bob", "0.600000"),
        ("alice", "0.500000"),
        ("dave", "0.000000"),
    ]
    return reports


async def test_quota_attainment_of_managers_teams_and_company_from_the_worker_state(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    await ensure_product_topics(settings)
    month, before = months_back()
    m, m1 = month_key(month), month_key(before)
    events = sales_events(month, before)
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
            ingested = await api.http.post("/api/v1/events", json=events)
            assert ingested.status_code == 202, ingested.text
            with running_worker(settings, tmp_path / "worker.log") as worker:
                try:
                    await wait_until(lambda: worker_reached(redis, keys, len(events)), within=DEADLINE_S)
                except AssertionError:
                    raise AssertionError(f"worker did not finish; log tail:\n{worker.log_tail()}") from None
            assert await redis.smembers(keys.team_month_managers("north", m)) == {b"alice", b"bob"}
            assert await redis.smembers(keys.team_month_managers("north", m1)) == {b"dave"}

            await set_quotas(api, m, m1)
            await assert_quota_reads(api, m, m1)

            funnel = await get_json(api, "/api/v1/funnel/company", period="month", at=m)
            assert funnel["period"]["label"] == m
            body = funnel["funnel"]
            assert [(s["stage"], s["entries"], s["next_stage"]) for s in body["stages"]] == [
                ("new", 4, "qualified"),
                ("qualified", 1, "proposal"),
                ("proposal", 0, "negotiation"),
                ("negotiation", 0, "won"),
            ]
            assert [(s["conversion_to_next"], s["drop_off"]) for s in body["stages"]] == [
                ("0.250000", "0.750000"),
                ("0.000000", "1.000000"),
                (None, None),
                (None, None),
            ]
            assert (body["won"], body["lost"], body["overall_win_conversion"]) == (3, 1, "0.750000")
            assert body["lost_by_reason"] == {"price": 1}
            team_funnel = await get_json(api, "/api/v1/funnel/teams/south", period="month", at=m)
            assert team_funnel["funnel"]["overall_win_conversion"] == "1.000000"
            assert (await api.http.get("/api/v1/funnel/managers/nobody")).status_code == 404
            assert (
                await api.http.get("/api/v1/funnel/company", params={"period": "month", "at": "x"})
            ).status_code == 422
    finally:
        await redis.aclose()


async def test_a_manager_with_a_quota_and_no_event_yet_reads_zeros_against_the_plan(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    month = month_key(FIXED_NOW.date())  # the API's clock: the current month
    async with running_api(settings) as api:
        assert (await api.http.get("/api/v1/kpis/managers/newbie")).status_code == 404
        assert (await put(api, "newbie", month, "12000")).status_code == 200

        body = await get_json(api, "/api/v1/kpis/managers/newbie", period="month")
        assert body["scope"] == {"kind": "manager", "id": "newbie", "token": "m:newbie"}
        assert body["period"]["label"] == month
        kpis = body["kpis"]
        assert (kpis["calls"], kpis["meetings"], kpis["deals_won"], kpis["revenue"]) == (0, 0, 0, "0.0000")
        assert (kpis["quota"], kpis["quota_attainment"]) == ("12000.0000", "0.000000")
        # Everything the manager's own page (/me) reads answers too.
        day = await get_json(api, "/api/v1/kpis/managers/newbie", period="day")
        assert day["kpis"]["calls"] == 0
        series = await get_json(api, "/api/v1/kpis/managers/newbie/series", granularity="day")
        assert {point["kpis"]["calls"] for point in series["points"]} == {0}
        pipeline = await get_json(api, "/api/v1/pipeline/managers/newbie")
        assert pipeline["pipeline"]["open_deals"] == 0
        await get_json(api, "/api/v1/funnel/managers/newbie", period="month")
        # A quota of another month does not make a manager known now.
        assert (await put(api, "later", "2027-01", "5000")).status_code == 200
        unknown = await api.http.get("/api/v1/kpis/managers/later")
        assert unknown.status_code == 404
        assert f"no quota for {month}" in unknown.json()["detail"]


async def test_replay_wipes_redis_and_restores_quotas_from_the_compacted_topic(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    await ensure_product_topics(settings)
    month, before = months_back()
    m, m1 = month_key(month), month_key(before)
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
            ingested = await api.http.post("/api/v1/events", json=sales_events(month, before))
            assert ingested.status_code == 202, ingested.text
            await set_quotas(api, m, m1)
            # No worker has run: replay builds the KPI state from the event log, and restores the quotas.
            assert await redis.hgetall(keys.quotas(m)) != {}
            await redis.set(f"{keys.prefix}:stray", b"gone after the wipe")
            await redis.hset(keys.quotas(m), "mallory", "1")  # not in Kafka: must not survive
            await replay(settings, show_progress=False)
            assert await redis.get(f"{keys.prefix}:stray") is None
            assert await redis.hgetall(keys.quotas(m)) == {
                b"alice": b"200000000",
                b"bob": b"100000000",
                b"carol": b"40000000",
                b"dave": b"70000000",
                b"erin": b"10000000",
            }
            assert await redis.hgetall(keys.quotas(m1)) == {b"dave": b"10000000"}
            before_rebuild = await assert_quota_reads(api, m, m1)
            # A second rebuild gives the very same answers.
            await replay(settings, show_progress=False)
            assert await assert_quota_reads(api, m, m1) == before_rebuild

        log = await read_quota_log(settings)
        assert log[f"frank|{m}"][0].quota is None  # the delete is a tombstone, the last record of its key
        assert str(log[f"bob|{m}"][0].quota.amount) == "10000.0000"  # type: ignore[union-attr]
        assert await topic_config(settings, settings.kafka.quotas_topic, "cleanup.policy") == "compact"
    finally:
        await redis.aclose()


async def topic_config(settings: Settings, topic: str, name: str) -> str | None:
    client = admin(settings)
    await client.start()
    try:
        responses = await client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await client.close()
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == name:
                    value: str | None = entry[1]
                    return value
    return None


async def test_bad_quotas_are_refused_with_the_reason_and_nothing_is_written(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    async with running_api(settings) as api:
        cases: list[tuple[str, Any, str]] = [
            ("2026-13", "100", "'2026-13' is not a month; write it as YYYY-MM"),
            ("2026-1", "100", "YYYY-MM"),
            ("2026-11", "-5", "amount -5 is negative"),
            ("2026-11", "12.34567", "more than 4 decimal places"),
            ("2026-11", "ten", "not a decimal number"),
            ("2026-11", "NaN", "not a finite number"),
        ]
        for month, amount, reason in cases:
            response = await put(api, "ann", month, amount)
            assert response.status_code == 422, (month, amount)
            assert reason in response.json()["detail"]
        assert (await api.http.put("/api/v1/quotas/ann/2026-11", json={"amount": True})).status_code == 422
        assert (await api.http.put("/api/v1/quotas/ann/2026-11", json={})).status_code == 422
        too_long = await put(api, "m" * 129, "2026-11", "1")
        assert too_long.status_code == 422

        bad_csv = "manager_id,month,amount\nann,2026-11,100\nbob,2026-13,5\ncarl,2026-11,-1\n\ndee,2026-11\n"
        response = await import_csv(api, bad_csv)
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert "nothing was imported" in detail["message"]
        assert [(p["line"], p["reason"]) for p in detail["problems"]] == [
            (3, "month '2026-13' is not a month; write it as YYYY-MM, e.g. 2026-11"),
            (4, "amount -1 is negative; a quota is 0 or more"),
            (6, "has 2 fields, the header has 3"),
        ]
        headerless = await import_csv(api, "ann,2026-11,100\n")
        assert headerless.status_code == 422
        assert headerless.json()["detail"]["problems"][0]["line"] == 1
        wrong_type = await import_csv(api, "manager_id,month,amount\n", content_type="application/json")
        assert wrong_type.status_code == 415
        assert "text/csv" in wrong_type.json()["detail"]

        absent = await api.http.delete("/api/v1/quotas/ann/2026-11")
        assert absent.status_code == 404
        assert "no quota is set for manager 'ann' in 2026-11" in absent.json()["detail"]
        assert (await api.http.delete("/api/v1/quotas/ann/2026-14")).status_code == 422
        assert (await api.http.get("/api/v1/quotas", params={"month": "Nov"})).status_code == 422

        # All or nothing: ann's good line was not written; the quota list of today's month is empty.
        listed = await get_json(api, "/api/v1/quotas", month="2026-11")
        assert (listed["quotas"], listed["total"]) == ([], "0.0000")
        assert await read_quota_log(settings) == {}


async def test_quota_changes_answer_503_when_kafka_is_down(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(kafka={"bootstrap_servers": closed_kafka_address()}, api={"kafka_timeout_s": 2.0})
    async with running_api(settings) as api:
        response = await put(api, "ann", "2026-11", "100")
        assert response.status_code == 503
        assert "Retry" in response.json()["detail"]
        assert (await import_csv(api, "manager_id,month,amount\nann,2026-11,1\n")).status_code == 503
        # Reads need Redis only.
        listed = await get_json(api, "/api/v1/quotas", month="2026-11")
        assert listed["quotas"] == []


async def test_cli_imports_and_lists_quotas(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    csv_file = tmp_path / "quotas.csv"
    csv_file.write_text("manager_id,month,amount\nann,2026-11,12000.00\nbob,2026-11,9500\nann,2026-12,1\n")
    env = {**os.environ, **settings.to_environment()}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services", "quotas", *args], env=env, capture_output=True, text=True, timeout=120
        )

    refused = await asyncio.to_thread(cli, "import", str(csv_file))  # no event names ann or bob yet
    assert refused.returncode == 2
    assert "2 manager(s) of" in refused.stderr and "ann, bob" in refused.stderr
    assert "nothing was written" in refused.stderr and "--allow-unknown" in refused.stderr
    imported = await asyncio.to_thread(cli, "import", str(csv_file), "--allow-unknown")
    assert imported.returncode == 0, imported.stderr
    assert "imported 3 quota(s) for 2026-11, 2026-12" in imported.stdout

    listed = await asyncio.to_thread(cli, "list", "--month", "2026-11")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[1].split() == ["ann", "12,000.0000"]
    assert lines[2].split() == ["bob", "9,500.0000"]
    assert lines[3].split()[:2] == ["total", "21,500.0000"]
    as_csv = await asyncio.to_thread(cli, "list", "--month", "2026-11", "--csv")
    assert as_csv.stdout.splitlines() == ["manager_id,month,amount", "ann,2026-11,12000.0000", "bob,2026-11,9500.0000"]

    log = await read_quota_log(settings)
    assert sorted(log) == ["ann|2026-11", "ann|2026-12", "bob|2026-11"]
    async with running_api(settings) as api:
        listed_api = await get_json(api, "/api/v1/quotas", month="2026-12")
        assert [(q["manager_id"], q["amount"]) for q in listed_api["quotas"]] == [("ann", "1.0000")]
