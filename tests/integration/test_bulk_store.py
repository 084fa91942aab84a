"""The bulk stores stay fenced: the import path's (replay --keep), whose commit is held for the next
batch's reads, and the sole writer's (a replay, an import onto empty state), which reads nothing back."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from services.settings import Settings
from services.topics import RedisKeys
from streams.processor import BatchProcessor, DeadLetter, RawRecord
from streams.store import BulkStore, PreviousCommitFailed, SoleWriterStore

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 27, 12, tzinfo=UTC)
TP = "crm.events:0"


def calls(first: int, count: int) -> list[RawRecord]:
    stamp = int(AT.timestamp() * 1000)
    return [
        RawRecord(
            "crm.events",
            0,
            offset,
            stamp,
            None,
            json.dumps(
                {
                    "event_id": f"call-{offset}",
                    "type": "call",
                    "occurred_at": AT.isoformat(),
                    "manager_id": "ann",
                    "team_id": "north",
                    "duration_s": 60,
                }
            ).encode(),
        )
        for offset in range(first, first + count)
    ]


async def no_rejects(letters: Sequence[DeadLetter]) -> None:
    raise AssertionError(f"unexpected rejects: {[letter.rejection for letter in letters]}")


async def calls_of_the_day(redis: Redis, keys: RedisKeys) -> int:
    return int(await redis.hget(keys.bucket("c", "day", "2026-11-27"), "calls") or 0)


@contextmanager
def bulk_store(settings: Settings, redis: Redis, threaded: bool) -> Iterator[BulkStore]:
    """The import path's store, sending its commits from the event loop or (as replay does) a thread."""
    writer = SyncRedis.from_url(settings.redis.url) if threaded else None
    store = BulkStore(redis, RedisKeys.from_settings(settings), claim_ttl_s=3600, writer=writer)
    try:
        yield store
    finally:
        store.close()


@pytest.mark.parametrize("threaded", [False, True])
async def test_held_commits_all_apply_in_order_once_settled(settings: Settings, redis: Redis, threaded: bool) -> None:
    keys = RedisKeys.from_settings(settings)
    with bulk_store(settings, redis, threaded) as store:
        processor = BatchProcessor(settings, store, no_rejects)
        for first in range(0, 30, 10):
            await processor.process(calls(first, 10))
        assert await calls_of_the_day(redis, keys) < 30  # the last commit is still held or in flight
        await store.settle()
    assert await calls_of_the_day(redis, keys) == 30
    assert int(await redis.hget(keys.offsets, TP) or 0) == 30


@pytest.mark.parametrize("threaded", [False, True])
async def test_a_held_commit_is_fenced_by_the_offsets_it_read(settings: Settings, redis: Redis, threaded: bool) -> None:
    # Another writer moves the partition's offset while the first batch's commit is held: that commit
    # must not apply, nor the second batch's (computed over it), and the import must stop saying so.
    keys = RedisKeys.from_settings(settings)
    with bulk_store(settings, redis, threaded) as store:
        processor = BatchProcessor(settings, store, no_rejects)
        await processor.process(calls(0, 10))
        await redis.hset(keys.offsets, TP, 5)
        with pytest.raises(PreviousCommitFailed, match="offset"):
            await processor.process(calls(10, 10))
            await store.settle()
    assert await calls_of_the_day(redis, keys) == 0
    assert int(await redis.hget(keys.offsets, TP) or 0) == 5


async def test_a_sole_writer_fails_once_another_writer_commits_any_partition(settings: Settings, redis: Redis) -> None:
    # The sole writer (an import onto a state that held nothing) sets a new bucket's fields and checks no
    # claim: a worker left running that commits a partition the next batch has no record of must stop
    # it, not see its calls overwritten.
    keys = RedisKeys.from_settings(settings)
    store = SoleWriterStore(redis, keys, claim_ttl_s=3600, writer=SyncRedis.from_url(settings.redis.url))
    store.fence([TP, "crm.events:1"])
    try:
        processor = BatchProcessor(settings, store, no_rejects)
        await processor.process(calls(0, 10))
        await store.flush()
        assert await redis.hget(keys.offsets, "crm.events:1") is None  # fenced, not written
        await redis.hset(keys.offsets, "crm.events:1", 3)  # the worker's commit
        await redis.hincrby(keys.bucket("c", "day", "2026-11-27"), "calls", 3)
        await processor.process(calls(10, 10))
        with pytest.raises(PreviousCommitFailed, match=r"crm\.events:1"):
            await store.flush()
        assert await calls_of_the_day(redis, keys) == 13
        assert int(await redis.hget(keys.offsets, TP) or 0) == 10
    finally:
        store.close()
