"""From simulated CRM events on the real broker to KPIs over REST and live WebSocket changes."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import websockets
from redis.asyncio import Redis

from services.kafka import ensure_product_topics
from services.kafka import producer as kafka_producer
from services.settings import Settings
from services.topics import RedisKeys, Topics
from tests.integration.api_harness import running_api, wait_until
from tests.integration.pipeline_checks import (
    assert_state_equals_reference,
    malformed,
    produce_simulated,
    read_dead_letters,
    scope_paths,
    worker_reached,
)
from tests.integration.worker_process import running_worker

pytestmark = pytest.mark.integration

DEADLINE_S = 180.0


async def test_kpis_over_rest_equal_the_reference(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(business={"timezone": "Europe/Berlin"}, worker={"batch_size": 500})
    await ensure_product_topics(settings)
    records = await produce_simulated(settings, seed=11, days=40, count=4000)

    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        with running_worker(settings, tmp_path / "worker.log") as worker:
            try:
                await wait_until(
                    lambda: worker_reached(redis, keys, len(records)), within=DEADLINE_S, what="the worker"
                )
            except AssertionError:
                raise AssertionError(f"worker did not finish; log tail:\n{worker.log_tail()}") from None

        reference, rejected, periods, compared = await assert_state_equals_reference(settings, redis, records)
        assert len(scope_paths(reference)) == 1 + 9 + 3
        assert len(periods) >= 8 and compared == 13 * len(periods)

        dead = await read_dead_letters(settings, sum(rejected.values()))
        assert Counter(dead) == malformed(records)
    finally:
        await redis.aclose()


async def test_websocket_client_receives_the_change(settings: Settings, tmp_path: Path) -> None:
    await ensure_product_topics(settings)
    topics = Topics.from_settings(settings)
    with running_worker(settings, tmp_path / "worker.log"):
        async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
            async with websockets.connect(api.ws_url) as ws:
                await ws.send(json.dumps({"type": "subscribe", "scopes": ["m:wally"]}))
                snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert snapshot["type"] == "snapshot"
                producer = kafka_producer(settings)
                await producer.start()
                try:
                    event = {
                        "event_id": "ws-1",
                        "type": "call",
                        "occurred_at": datetime.now(UTC).isoformat(),
                        "manager_id": "wally",
                        "duration_s": 42,
                    }
                    await producer.send_and_wait(topics.events, json.dumps(event).encode(), key=b"wally")
                finally:
                    await producer.stop()
                deadline = time.monotonic() + 60
                while True:
                    remaining = deadline - time.monotonic()
                    assert remaining > 0, "no change for m:wally arrived"
                    message = json.loads(await asyncio.wait_for(ws.recv(), remaining))
                    if message["type"] == "change" and message["scope"] == "m:wally" and message["g"] == "day":
                        break
                assert message["kpis"]["calls"] == 1
                assert message["kpis"]["call_duration_s"] == 42
