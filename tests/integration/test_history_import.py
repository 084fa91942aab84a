"""Importing a history file: to Kafka, state caught up in bulk, rejects in the dead-letter topic, exact KPIs."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.kpis.periods import PeriodKind
from services.settings import Settings
from services.simulation import Simulation, SimulationConfig
from services.topics import RedisKeys
from streams.history_import import import_history
from tests.integration.api_harness import running_api
from tests.integration.pipeline_checks import (
    assert_api_equals_reference,
    assert_worker_counters,
    malformed,
    periods_of,
    read_dead_letters,
    reference_of,
)

pytestmark = pytest.mark.integration


async def test_import_history_file(settings: Settings, tmp_path: Path) -> None:
    config = SimulationConfig.from_business(settings.business, managers=6, teams=2, duplicates=0.01, malformed=0.01)
    records = list(Simulation(config, seed=5).records(datetime.now(UTC) - timedelta(days=120), count=6000))
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(record.value + b"\n" for record in records))

    sent = await import_history(settings, history, show_progress=False)
    assert sent == len(records)

    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        reference, rejected, duplicates = reference_of(settings, records)
        accepted = len(records) - sum(rejected.values()) - duplicates
        await assert_worker_counters(redis, keys, reference, rejected, duplicates, accepted)
        async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
            await assert_api_equals_reference(api, reference, periods_of(reference, (PeriodKind.MONTH,)))
        assert Counter(await read_dead_letters(settings, sum(rejected.values()))) == malformed(records)
    finally:
        await redis.aclose()
