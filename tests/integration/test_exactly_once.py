"""50,000 simulated events, the worker SIGKILLed and restarted twice mid-stream: every KPI is exact, over calendar
periods and rolling windows."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.kafka import ensure_product_topics
from services.kpis.periods import PeriodKind
from services.settings import Settings
from services.simulation import Simulation, SimulationConfig
from services.simulation.sinks import KafkaSink
from services.topics import RedisKeys
from tests.integration.api_harness import running_api, wait_until
from tests.integration.pipeline_checks import (
    assert_api_equals_reference,
    assert_api_windows_equal_reference,
    assert_worker_counters,
    latest_event_time,
    malformed,
    periods_of,
    read_dead_letters,
    reference_of,
    worker_reached,
)
from tests.integration.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

EVENTS = 50_000
DEADLINE_S = 600.0


async def test_sigkilled_worker_never_loses_or_double_counts(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(
        business={"timezone": "America/New_York"},
        kafka={"partitions": 4},
        worker={"batch_size": 250, "batch_within_s": 0.02},
    )
    await ensure_product_topics(settings)
    config = SimulationConfig.from_business(
        settings.business, managers=12, teams=3, duplicates=0.01, out_of_order=0.05, malformed=0.01
    )
    records = list(Simulation(config, seed=2026).records(datetime.now(UTC) - timedelta(days=200), count=EVENTS))
    assert sum(r.out_of_order for r in records) >= EVENTS * 0.03
    async with KafkaSink(settings.kafka.bootstrap_servers, settings.kafka.events_topic) as sink:
        await sink.write(records)

    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    kills = 0
    try:
        for stop_at in (EVENTS // 3, 2 * EVENTS // 3):
            worker.start()
            await wait_until(lambda n=stop_at: worker_reached(redis, keys, n), within=DEADLINE_S, interval=0.005)
            worker.kill()
            kills += 1
        worker.start()
        try:
            await wait_until(lambda: worker_reached(redis, keys, len(records)), within=DEADLINE_S, what="the worker")
        except AssertionError:
            raise AssertionError(f"worker did not finish; log tail:\n{worker.log_tail()}") from None
    finally:
        worker.stop()
    assert kills == 2
    assert worker.log_path.read_text().count("resuming") >= 3  # each start resumed from the state's offsets

    try:
        reference, rejected, duplicates = reference_of(settings, records)
        accepted = len(records) - sum(rejected.values()) - duplicates
        await assert_worker_counters(redis, keys, reference, rejected, duplicates, accepted)
        async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
            periods = periods_of(reference, (PeriodKind.DAY, PeriodKind.WEEK, PeriodKind.MONTH))
            compared = await assert_api_equals_reference(api, reference, periods)
            assert len(periods) >= 100 and compared == 16 * len(periods)
            # Rolling windows at a few instants: just after the newest event, a day and a half and half
            # a day before it (at odd seconds), and three weeks back, where the 30 d window and the one
            # before it reach past the 62 days of minutes kept (422).
            newest = latest_event_time(reference)
            as_ofs = [
                newest + timedelta(minutes=1),
                newest - timedelta(days=1, hours=7, minutes=13, seconds=27),
                newest - timedelta(hours=11, minutes=59, seconds=59, microseconds=1),
                newest - timedelta(days=21, hours=3, minutes=31, seconds=7),
            ]
            windows, refused = await assert_api_windows_equal_reference(api, reference, as_ofs, settings)
            assert (windows, refused) == (16 * 15, 16)
        dead = await read_dead_letters(settings, sum(rejected.values()))
        assert Counter(dead) == malformed(records)
    finally:
        await redis.aclose()
