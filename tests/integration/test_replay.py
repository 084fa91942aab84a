"""Replay onto wiped state, the sole-writer path: the batch reference's numbers, whatever the batch size.

The sole writer reads nothing back from Redis: it sets a bucket's fields on its first write and adds
to them afterwards, and does not check claims. So the state must be the same whether a bucket is
written once (one batch) or by many batches, and the same as the checking path leaves (a replay that
keeps the state, as a history import runs it).
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from services.settings import Settings
from services.topics import RedisKeys
from streams.replay import replay, wipe_state
from tests.integration.pipeline_checks import assert_state_equals_reference, produce_simulated

pytestmark = pytest.mark.integration


async def kpi_hashes(redis: Redis, keys: RedisKeys) -> dict[str, dict[bytes, bytes]]:
    """Every bucket and current-state hash of the deployment, by key (without the prefix)."""
    names = [name async for name in redis.scan_iter(match=f"{keys.prefix}:kpi:*", count=5000)]
    names += [name async for name in redis.scan_iter(match=f"{keys.prefix}:cur:*", count=5000)]
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    values = await pipe.execute()
    return {name.decode().removeprefix(f"{keys.prefix}:"): value for name, value in zip(names, values, strict=True)}


async def test_replay_onto_wiped_state_equals_the_reference_for_any_batch_size(settings: Settings) -> None:
    # 40 days: no minute, hour or UTC-day bucket is past its 62-day retention, so no batch leaves
    # one out and every state below holds the same buckets.
    records = await produce_simulated(settings, seed=23, days=40, count=5000)

    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        stale = keys.bucket("c", "day", "2020-01-01")
        await redis.hset(stale, "calls", 99)

        # Many batches: most buckets are written by several of them.
        assert await replay(settings, batch_size=700, show_progress=False) == len(records)
        assert not await redis.exists(stale), "the replay did not wipe the state first"
        await assert_state_equals_reference(settings, redis, records)
        by_batches = await kpi_hashes(redis, keys)
        assert len(by_batches) > 1000

        # One batch: every bucket written once.
        assert await replay(settings, batch_size=100_000, show_progress=False) == len(records)
        assert await kpi_hashes(redis, keys) == by_batches

        # The checking path (reads the state, checks claims, adds to every field) from a wiped state.
        await wipe_state(redis, keys)
        assert await replay(settings, wipe=False, batch_size=700, show_progress=False) == len(records)
        assert await kpi_hashes(redis, keys) == by_batches
    finally:
        await redis.aclose()
