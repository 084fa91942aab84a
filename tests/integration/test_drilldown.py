"""Drill-down over the real pipeline: the worker into Redis, the archive sink into PostgreSQL, the API over both.

For every KPI of CONTRACT section 3, every breakdown key, three scopes and calendar periods and a
rolling window, the drill-down's row count and its value equal the number the KPI route shows, on
simulated data with duplicates, out-of-order and malformed records, plus deals whose late events
change a win's revenue, a customer's repeat win and a win that arrives before its deal_created.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.kafka import ensure_product_topics
from services.kpis.periods import PeriodKind, period_of
from services.settings import Settings
from services.simulation import SimRecord
from services.simulation.faults import kafka_key
from services.simulation.sinks import KafkaSink
from services.topics import RedisKeys
from tests.integration.api_harness import RunningApi, running_api, wait_until
from tests.integration.archive_db import archived_rows, fresh_archive
from tests.integration.pipeline_checks import produce_simulated, reference_of, worker_reached
from tests.integration.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

DEADLINE_S = 180.0
PLAIN = ("calls", "meetings", "proposals", "deals_created", "deals_won", "deals_lost", "repeat_deals", "new_customers")
"""KPIs whose value is the number of rows."""
FROM_ROWS = {
    "call_duration_s": "calls",
    "revenue": "deals_won",
    "avg_deal_size": "deals_won",
    "win_rate": None,
    "avg_cycle_days": None,
    "repeat_revenue": "repeat_deals",
    "quota_attainment": "deals_won",
}
"""KPIs whose value the drill-down derives from its rows, and the KPI that counts those rows (if shown)."""


def _crafted(now: datetime) -> list[SimRecord]:
    """Deals whose numbers depend on late and out-of-order events, sent after everything else."""
    day = now - timedelta(days=2)

    def at(hours: float) -> str:
        return (day + timedelta(hours=hours)).isoformat()

    base = {"manager_id": "crafty", "team_id": "team-x"}
    events: list[dict[str, Any]] = [
        # d-late: created at 100, won without an amount; a LATE stage change (sent last) set 250 before the win.
        {"event_id": "c1", "type": "deal_created", "occurred_at": at(1), "deal_id": "d-late", "customer_id": "k1",
         "amount": "100", "lead_source": "fair"},
        {"event_id": "w1", "type": "deal_won", "occurred_at": at(5), "deal_id": "d-late"},
        # d-repeat: the same customer's second win (a repeat deal; k1's first win is w1).
        {"event_id": "c2", "type": "deal_created", "occurred_at": at(2), "deal_id": "d-repeat", "customer_id": "k1",
         "amount": "40.5", "lead_source": "fair"},
        {"event_id": "w2", "type": "deal_won", "occurred_at": at(6), "deal_id": "d-repeat", "amount": "42.25"},
        # d-early: the win arrives before the deal_created (cycle: 3 h), and twice (a duplicate).
        {"event_id": "w3", "type": "deal_won", "occurred_at": at(7), "deal_id": "d-early", "amount": "7"},
        {"event_id": "w3", "type": "deal_won", "occurred_at": at(7), "deal_id": "d-early", "amount": "7"},
        {"event_id": "c3", "type": "deal_created", "occurred_at": at(4), "deal_id": "d-early", "customer_id": "k2",
         "amount": "5", "stage": "qualified"},
        {"event_id": "l1", "type": "deal_lost", "occurred_at": at(8), "deal_id": "d-lost", "lost_reason": "budget"},
        {"event_id": "s1", "type": "deal_stage_changed", "occurred_at": at(3), "deal_id": "d-late",
         "stage": "proposal", "amount": "250"},
    ]  # fmt: skip
    return [
        SimRecord(key=kafka_key({**base, **event}), value=json.dumps({**base, **event}).encode(), expected="ok")
        for event in events
    ]


def _kpi_path(scope: str) -> str:
    if scope == "c":
        return "/api/v1/kpis/company"
    return f"/api/v1/kpis/{'teams' if scope.startswith('t:') else 'managers'}/{scope[2:]}"


async def _check_cell(
    api: RunningApi, params: dict[str, str], kpis: dict[str, Any], kpi: str, expected_rows: int | None, value: Any
) -> None:
    response = await api.http.get("/api/v1/drilldown", params={**params, "kpi": kpi, "page_size": "5"})
    assert response.status_code == 200, response.text
    body = response.json()
    where = (params, kpi)
    assert body["value"] == value, where
    if expected_rows is not None:
        assert body["total_rows"] == expected_rows, where
    assert len(body["rows"]) == min(5, body["total_rows"]), where


async def _check_scope_range(api: RunningApi, params: dict[str, str], kpi_params: dict[str, str]) -> int:
    """Every KPI cell of one scope and one period or window; the number of cells compared."""
    response = await api.http.get(_kpi_path(params["scope"]), params=kpi_params)
    assert response.status_code == 200, response.text
    kpis = response.json()["kpis"]
    cells = 0
    for kpi in PLAIN:
        await _check_cell(api, params, kpis, kpi, kpis[kpi], kpis[kpi])
        cells += 1
    for kpi, counted_by in FROM_ROWS.items():
        if kpi == "quota_attainment" and kpi_params.get("period") != "month":
            continue
        rows = kpis[counted_by] if counted_by else None
        if kpi == "win_rate":
            rows = kpis["deals_won"] + kpis["deals_lost"]
        await _check_cell(api, params, kpis, kpi, rows, kpis[kpi])
        cells += 1
    families = {
        "stage_entries": {key: (count, count) for key, count in kpis["stage_entries"].items()},
        "lost_by_reason": {key: (count, count) for key, count in kpis["lost_by_reason"].items()},
        "by_source.deals_created": {k: (v["deals_created"], v["deals_created"]) for k, v in kpis["by_source"].items()},
        "by_source.deals_won": {k: (v["deals_won"], v["deals_won"]) for k, v in kpis["by_source"].items()},
        "by_source.revenue": {k: (v["deals_won"], v["revenue"]) for k, v in kpis["by_source"].items()},
    }
    for kpi, keyed in families.items():
        for key, (rows, value) in {**keyed, "no-such-key": (0, 0 if kpi != "by_source.revenue" else "0.0000")}.items():
            await _check_cell(api, {**params, "key": key}, kpis, kpi, rows, value)
            cells += 1
    return cells


async def test_every_kpi_cell_lists_exactly_the_events_it_counts(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base: Settings = make_settings(business={"timezone": "Europe/Berlin"})
    await ensure_product_topics(base)
    now = datetime.now(UTC)
    async with fresh_archive(base) as settings:
        records = await produce_simulated(settings, seed=7, days=35, count=3000)
        crafted = _crafted(now)
        async with KafkaSink(settings.kafka.bootstrap_servers, settings.kafka.events_topic) as sink:
            await sink.write(crafted)
        everything = [*records, *crafted]
        reference, rejected, duplicates = reference_of(settings, everything)
        keys = RedisKeys.from_settings(settings)
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        archive = WorkerProcess(settings, tmp_path / "archive.log", module="streams.archive", args=("run",))
        worker.start()
        archive.start()
        try:
            async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
                redis = Redis.from_url(settings.redis.url)
                try:
                    await wait_until(
                        lambda: worker_reached(redis, keys, len(everything)), within=DEADLINE_S, what="the worker"
                    )
                finally:
                    await redis.aclose()
                await wait_until(
                    lambda: _archived_all(settings, len(everything)), within=DEADLINE_S, what="the archive sink"
                )
                month = period_of(PeriodKind.MONTH, now.astimezone(settings.business.zone).date())
                for manager in ("crafty", _first_other(reference.scopes(), "m:")):
                    response = await api.http.put(f"/api/v1/quotas/{manager}/{month.label}", json={"amount": "5000"})
                    assert response.status_code == 200, response.text

                latest = max(entries[-1][0] for entries in reference.timed.values() if entries)
                ranges: list[tuple[dict[str, str], dict[str, str]]] = []
                for day in (now - timedelta(days=2), now - timedelta(days=33)):
                    month_of = period_of(PeriodKind.MONTH, day.astimezone(settings.business.zone).date())
                    ranges.append(({"period": "month", "at": month_of.label},) * 2)
                day_of = period_of(PeriodKind.DAY, (now - timedelta(days=2)).astimezone(settings.business.zone).date())
                ranges.append(({"period": "day", "at": day_of.label},) * 2)
                window = {"window": "7d", "as_of": latest.isoformat()}
                ranges.append((window, window))
                scopes = [
                    "c",
                    "t:team-x",
                    "m:crafty",
                    _first_other(reference.scopes(), "t:"),
                    _first_other(reference.scopes(), "m:"),
                ]
                cells = 0
                for scope in scopes:
                    for range_params, kpi_params in ranges:
                        cells += await _check_scope_range(api, {"scope": scope, **range_params}, kpi_params)
                assert cells > 500

                # The crafted deals: the late stage change set the win's revenue; k1's second win is a repeat.
                crafted_month = {"scope": "m:crafty", "period": "month", "at": ranges[0][0]["at"]}
                wins = (await api.http.get("/api/v1/drilldown", params={**crafted_month, "kpi": "revenue"})).json()
                assert {row["event_id"]: row["revenue"] for row in wins["rows"]} == {
                    "w1": "250.0000",
                    "w2": "42.2500",
                    "w3": "7.0000",
                }
                repeat = (
                    await api.http.get("/api/v1/drilldown", params={**crafted_month, "kpi": "repeat_deals"})
                ).json()
                assert [row["event_id"] for row in repeat["rows"]] == ["w2"]
                cycle = (
                    await api.http.get("/api/v1/drilldown", params={**crafted_month, "kpi": "avg_cycle_days"})
                ).json()
                assert {row["event_id"]: row["cycle_days"] for row in cycle["rows"]}["w3"] == "0.125000"
        finally:
            worker.stop()
            archive.stop()
        counts = dict(await archived_rows(settings, "SELECT name, value FROM sink_counts"))
        assert counts["duplicates"] == duplicates
        assert counts["rejected"] == sum(rejected.values())


async def test_pages_cover_every_row_once_in_the_order_asked(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base: Settings = make_settings()
    await ensure_product_topics(base)
    async with fresh_archive(base) as settings:
        records = await produce_simulated(settings, seed=8, days=10, count=1500)
        archive = WorkerProcess(settings, tmp_path / "archive.log", module="streams.archive", args=("run",))
        archive.start()
        try:
            await wait_until(lambda: _archived_all(settings, len(records)), within=DEADLINE_S, what="the archive sink")
        finally:
            archive.stop()
        async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
            params = {"scope": "c", "kpi": "calls", "window": "30d", "as_of": datetime.now(UTC).isoformat()}
            first = (await api.http.get("/api/v1/drilldown", params={**params, "page_size": "7"})).json()
            seen: list[dict[str, Any]] = []
            for page in range(1, first["pages"] + 1):
                body = (
                    await api.http.get(
                        "/api/v1/drilldown",
                        params={**params, "page_size": "7", "page": str(page), "sort": "duration_s", "order": "asc"},
                    )
                ).json()
                seen.extend(body["rows"])
            assert first["total_rows"] > 100
            assert len(seen) == first["total_rows"]
            assert len({row["event_id"] for row in seen}) == len(seen)
            durations = [row["duration_s"] for row in seen if row["duration_s"] is not None]
            assert durations == sorted(durations)
            assert first["value"] == first["total_rows"]
            assert Counter(row["type"] for row in seen) == {"call": len(seen)}

            exported = await api.http.get(
                "/api/v1/drilldown/export", params={**params, "sort": "duration_s", "order": "asc", "format": "csv"}
            )
            lines = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
            id_column = lines[0].index("Event id")
            assert [line[id_column] for line in lines[1:]] == [row["event_id"] for row in seen]
            as_pdf = await api.http.get("/api/v1/drilldown/export", params={**params, "format": "pdf"})
            assert as_pdf.status_code == 200 and as_pdf.content.startswith(b"%PDF")

            missing_key = await api.http.get("/api/v1/drilldown", params={**params, "kpi": "stage_entries"})
            assert missing_key.status_code == 422
            assert "give its key" in missing_key.json()["detail"]


async def _archived_all(settings: Settings, count: int) -> bool:
    rows = await archived_rows(settings, "SELECT COALESCE(sum(value), 0) FROM sink_counts")
    return int(rows[0][0]) >= count  # type: ignore[call-overload]


def _first_other(scopes: set[str], prefix: str) -> str:
    """The first simulated scope of a kind (not one of the crafted events')."""
    return sorted(scope for scope in scopes if scope.startswith(prefix) and scope not in ("m:crafty", "t:team-x"))[0]
