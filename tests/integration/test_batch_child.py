"""The batch process's overlapped commits on the real Redis: a commit that fails in flight, before or
after Redis applied it, leaves the state as if every batch had applied once, and every batch is
answered once, in order, only after its commit applied."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.settings import Settings
from services.simulation import Simulation, SimulationConfig
from services.topics import RedisKeys
from streams.batch_child import Applier
from streams.frames import read_frame
from streams.processor import BatchProcessor, DeadLetter, RawRecord, apply_until_done
from streams.store import OverlappedStore, StateStore
from tests.integration.test_replay import kpi_hashes

pytestmark = pytest.mark.integration

CLAIM_TTL_S = 86_400


def simulated_batches(settings: Settings, *, count: int, size: int) -> list[list[RawRecord]]:
    config = SimulationConfig.from_business(settings.business, managers=6, teams=2, duplicates=0.02)
    now = datetime.now(UTC)
    records = list(Simulation(config, seed=31).records(now - timedelta(days=20), end=now, count=count))
    stamp_ms = int(now.timestamp() * 1000)
    raw = [RawRecord("events", 0, offset, stamp_ms, r.key, r.value) for offset, r in enumerate(records)]
    return [raw[start : start + size] for start in range(0, len(raw), size)]


async def no_dead_letters(letters: list[DeadLetter]) -> None:
    assert not letters, letters


async def replies_of(out: io.BytesIO) -> list[tuple[Any, ...]]:
    reader = asyncio.StreamReader()
    reader.feed_data(out.getvalue())
    reader.feed_eof()
    found = []
    while (reply := await read_frame(reader)) is not None:
        found.append(reply)
    return found


async def test_commits_failing_in_flight_are_applied_again_once(make_settings: Callable[..., Settings]) -> None:
    overlapped_settings, plain_settings = make_settings(), make_settings()
    batches = simulated_batches(overlapped_settings, count=3000, size=250)
    redis = Redis.from_url(overlapped_settings.redis.url)
    try:
        # The reference: the same batches through the plain store, one commit waited for at a time.
        plain_keys = RedisKeys.from_settings(plain_settings)
        plain = BatchProcessor(plain_settings, StateStore(redis, plain_keys, claim_ttl_s=CLAIM_TTL_S), no_dead_letters)
        for batch in batches:
            await apply_until_done(plain, batch, {})

        keys = RedisKeys.from_settings(overlapped_settings)
        store = OverlappedStore(redis, keys, claim_ttl_s=CLAIM_TTL_S)
        script = store._script
        calls = 0
        outcomes: list[str] = []

        async def flaky(args: list[Any]) -> Any:
            # The 3rd commit fails before Redis runs it; the 7th after Redis applied it (the reply lost).
            nonlocal calls
            calls += 1
            if calls == 3:
                outcomes.append("lost before")
                raise RedisConnectionError("connection lost before the script ran")
            result = await script(args=args)
            if calls == 7:
                outcomes.append("lost after")
                raise RedisTimeoutError("reply lost after the script ran")
            return result

        store._script = flaky  # type: ignore[assignment]
        out = io.BytesIO()
        applier = Applier(BatchProcessor(overlapped_settings, store, no_dead_letters), store, out)
        answered: list[int] = []
        for batch in batches:
            await applier.apply(batch, {}, {}, 1)
            answered.append(len(await replies_of(out)))
        await applier.settle()
        # A batch is answered once its commit applied: the one just handed over still waits, unless a
        # failure made the applier apply it again, and wait for it, right away (twice here).
        assert all(count in (index, index + 1) for index, count in enumerate(answered)), answered
        assert sum(1 for index, count in enumerate(answered) if count == index) == len(batches) - 2, answered

        assert outcomes == ["lost before", "lost after"]
        assert await replies_of(out) == [("done", {})] * len(batches)
        assert await kpi_hashes(redis, keys) == await kpi_hashes(redis, plain_keys)
        stats = {k.decode(): int(v) for k, v in (await redis.hgetall(keys.worker_stats)).items()}
        plain_stats = {k.decode(): int(v) for k, v in (await redis.hgetall(plain_keys.worker_stats)).items()}
        assert stats == plain_stats
        assert stats["processed"] + stats.get("duplicates", 0) == sum(len(batch) for batch in batches)
    finally:
        await redis.aclose()
