"""A SIGKILLed worker's replacement is back to work in seconds (static group membership, issue 19)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.kafka import ensure_product_topics
from services.settings import Settings
from services.simulation import SimRecord, Simulation, SimulationConfig
from services.simulation.sinks import KafkaSink
from services.topics import RedisKeys
from tests.integration.api_harness import wait_until
from tests.integration.pipeline_checks import assert_worker_counters, records_accounted, reference_of, worker_reached
from tests.integration.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

RESTART_BOUND_S = 5.0
"""From the replacement's start to its first committed batch (the issue's bound)."""


def simulated(settings: Settings, count: int, seed: int) -> list[SimRecord]:
    config = SimulationConfig.from_business(settings.business, managers=8, teams=2, duplicates=0.01, out_of_order=0.05)
    return list(Simulation(config, seed=seed).records(datetime.now(UTC) - timedelta(days=20), count=count))


async def produce_paced(settings: Settings, records: Sequence[SimRecord], per_second: int) -> None:
    """The records at about ``per_second`` (a stream in progress, not a backlog)."""
    chunk = max(1, per_second // 10)
    async with KafkaSink(settings.kafka.bootstrap_servers, settings.kafka.events_topic) as sink:
        for start in range(0, len(records), chunk):
            await sink.write(records[start : start + chunk])
            await asyncio.sleep(0.1)  # pacing the producer, not waiting for a result


async def test_a_sigkilled_worker_is_replaced_within_seconds(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(kafka={"partitions": 4}, worker={"batch_size": 200, "batch_within_s": 0.02})
    await ensure_product_topics(settings)
    records = simulated(settings, 24_000, seed=19)
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    producer = asyncio.create_task(produce_paced(settings, records, per_second=2_000))
    restarts: list[float] = []
    try:
        worker.start()
        await wait_until(lambda: worker_reached(redis, keys, 1), within=120, what="the first worker's first batch")
        for _ in range(5):
            await asyncio.sleep(0.5)  # let it run a moment between kills (pacing, nothing is awaited)
            worker.kill()
            before = await records_accounted(redis, keys)
            started = time.monotonic()
            worker.start()
            try:
                await wait_until(
                    lambda n=before: worker_reached(redis, keys, n + 1),
                    within=RESTART_BOUND_S,
                    interval=0.02,
                    what="the replacement's first committed batch",
                )
            except AssertionError:
                raise AssertionError(
                    f"no batch within {RESTART_BOUND_S} s of the restart:\n{worker.log_tail()}"
                ) from None
            restarts.append(time.monotonic() - started)
        await producer
        await wait_until(lambda: worker_reached(redis, keys, len(records)), within=300, what="the whole stream")
    finally:
        producer.cancel()
        worker.stop()
    print(f"first batch after restart: {', '.join(f'{s:.2f} s' for s in restarts)}")
    assert len(restarts) == 5
    try:
        reference, rejected, duplicates = reference_of(settings, records)
        accepted = len(records) - sum(rejected.values()) - duplicates
        await assert_worker_counters(redis, keys, reference, rejected, duplicates, accepted)
    finally:
        await redis.aclose()
