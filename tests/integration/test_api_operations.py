"""Operations: /metrics exposes the worker's exact counters from Redis, /healthz, Redis down or
restarted, and the wall-display page is served."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from services.localinfra.redis_server import RedisServer

if TYPE_CHECKING:
    from tests.integration.api_harness import ApiFactory, RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration


async def test_metrics_expose_the_workers_counters_and_lag_from_redis(api: RunningApi) -> None:
    await api.redis.hset(
        api.keys.worker_stats,
        mapping={"processed": "1234", "duplicates": "17", "rejected:too_old": "3", "rejected:unknown_stage": "2"},
    )
    await api.redis.hset(api.keys.consumer_lag, mapping={"crm.events:0": "5", "crm.events:1": "0"})

    samples = await api.metric_samples()

    assert samples[("crm_events_processed_total", ())] == 1234
    assert samples[("crm_events_duplicates_total", ())] == 17
    assert samples[("crm_events_rejected_total", (("reason", "too_old"),))] == 3
    assert samples[("crm_events_rejected_total", (("reason", "unknown_stage"),))] == 2
    assert samples[("crm_events_rejected_total", (("reason", "in_future"),))] == 0  # every code is exposed
    assert samples[("crm_consumer_lag", (("partition", "0"), ("topic", "crm.events")))] == 5
    assert samples[("crm_consumer_lag", (("partition", "1"), ("topic", "crm.events")))] == 0
    assert samples[("crm_ws_clients", ())] == 0
    assert samples[("crm_event_to_push_seconds_count", ())] == 0

    # Read at scrape time: the next scrape shows the worker's new numbers.
    await api.redis.hincrby(api.keys.worker_stats, "processed", 6)
    assert (await api.metric_samples())[("crm_events_processed_total", ())] == 1240


async def test_metrics_before_the_worker_wrote_anything(api: RunningApi) -> None:
    samples = await api.metric_samples()

    assert samples[("crm_events_processed_total", ())] == 0
    assert not [key for key in samples if key[0] == "crm_consumer_lag"]


async def test_each_app_has_its_own_registry(api_factory: ApiFactory) -> None:
    async with api_factory() as first, api_factory() as second:
        await first.http.post("/api/v1/events", content=b"[]")
        await first.http.post("/api/v1/events", content=b"nope")

        first_samples = await first.metric_samples()
        second_samples = await second.metric_samples()

    assert first_samples[("crm_ingest_events_total", (("result", "rejected"),))] == 1
    assert second_samples[("crm_ingest_events_total", (("result", "rejected"),))] == 0


async def test_healthz_is_ok_while_redis_answers(api: RunningApi) -> None:
    response = await api.http.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "redis": True, "kafka": False}  # Kafka: a closed port


async def test_redis_down_answers_503_with_a_reason(api_factory: ApiFactory) -> None:
    from tests.integration.api_harness import free_port

    async with api_factory(redis={"url": f"redis://127.0.0.1:{free_port()}/0"}) as api:
        health = await api.http.get("/healthz")
        managers = await api.http.get("/api/v1/managers")
        page = await api.http.get("/")

    assert health.status_code == 503
    assert health.json()["redis"] is False
    assert managers.status_code == 503
    assert managers.json()["detail"].startswith("Redis is unavailable")
    assert page.status_code == 200  # the page itself needs no Redis


async def test_the_first_request_after_a_redis_restart_is_answered(api_factory: ApiFactory, tmp_path: Path) -> None:
    """The pool's connections all broke with the restart: a request must reconnect, not answer 503."""
    from tests.integration.api_harness import free_port

    server = RedisServer(home=tmp_path / "redis", port=free_port(), start_timeout_s=30.0)
    await asyncio.to_thread(server.start)
    try:
        async with api_factory(redis={"url": server.url()}) as api:
            before = await api.http.get("/api/v1/managers")
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            after = [await api.http.get("/api/v1/managers") for _ in range(3)]
    finally:
        await asyncio.to_thread(server.stop)

    assert before.status_code == 200, before.text
    assert [response.status_code for response in after] == [200, 200, 200], [r.text for r in after]


async def test_wall_display_page_and_assets_are_served(api: RunningApi) -> None:
    page = await api.http.get("/")
    script = await api.http.get("/static/wall.js")
    style = await api.http.get("/static/wall.css")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for marker in ('id="live-status"', 'id="leaderboard"', 'id="clock"', 'data-kpi="revenue"', "/static/wall.js"):
        assert marker in page.text
    assert script.status_code == 200
    assert "/api/v1/leaderboard" in script.text
    assert '"/ws"' in script.text
    assert "http://" not in script.text and "https://" not in script.text  # no CDN, nothing external
    assert style.status_code == 200
