"""Deltas reach Redis exactly, however large: a bucket's deltas go to commit.lua as JSON numbers while a
Lua double holds them (below 2^53) and as decimal text otherwise; both ways, on a key's first write
(HSET, the sole writer's) and on later ones (HINCRBY)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from services.schemas.events import MONEY_SCALE
from services.settings import Settings
from services.topics import RedisKeys
from streams.processor import BatchProcessor, DeadLetter, RawRecord
from streams.store import EXACT_IN_LUA, SoleWriterStore, StateStore

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 27, 12, tzinfo=UTC)
AMOUNTS = ["999999999999.9999", "900719925474.0993", "0.0001", "123.4567"]
"""Won amounts: 10^16 - 1 units, 2^53 + 1 units (the first integer a double cannot hold), and small ones."""


def won(index: int, amount: str) -> list[bytes]:
    base = {"manager_id": "ann", "team_id": "north", "deal_id": f"d{index}"}
    return [
        json.dumps(
            {
                **base,
                "event_id": f"c{index}",
                "type": "deal_created",
                "occurred_at": AT.isoformat(),
                "customer_id": f"k{index}",
                "amount": "1",
            }
        ).encode(),
        json.dumps(
            {
                **base,
                "event_id": f"w{index}",
                "type": "deal_won",
                "occurred_at": (AT + timedelta(minutes=index)).isoformat(),
                "amount": amount,
            }
        ).encode(),
    ]


async def apply(processor: BatchProcessor, batches: Sequence[Sequence[bytes]]) -> None:
    offset = 0
    for batch in batches:
        records = [
            RawRecord("crm.events", 0, offset + i, int(AT.timestamp() * 1000), None, v) for i, v in enumerate(batch)
        ]
        offset += len(records)
        await processor.process(records)


async def no_rejects(letters: Sequence[DeadLetter]) -> None:
    raise AssertionError(f"unexpected rejects: {[letter.rejection for letter in letters]}")


@pytest.mark.parametrize("sole_writer", [False, True])
@pytest.mark.parametrize("batches", [1, 4])
async def test_revenue_beyond_two_to_the_53_is_exact(settings: Settings, sole_writer: bool, batches: int) -> None:
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    writer = SyncRedis.from_url(settings.redis.url)
    store = (
        SoleWriterStore(redis, keys, claim_ttl_s=3600, writer=writer)
        if sole_writer
        else StateStore(redis, keys, claim_ttl_s=3600)
    )
    try:
        values = [value for index, amount in enumerate(AMOUNTS) for value in won(index, amount)]
        size = len(values) // batches
        await apply(
            BatchProcessor(settings, store, no_rejects), [values[i : i + size] for i in range(0, len(values), size)]
        )
        if isinstance(store, SoleWriterStore):
            await store.flush()
        units = [int(Decimal(amount) * MONEY_SCALE) for amount in AMOUNTS]
        assert max(units) > EXACT_IN_LUA and sum(units) > EXACT_IN_LUA
        day = await redis.hgetall(keys.bucket("c", "day", "2026-11-27"))
        assert int(day[b"revenue"]) == sum(units)
        assert int(day[b"deals_won"]) == len(AMOUNTS)
        minutes = await redis.hgetall(keys.bucket("m:ann", "minute", "2026-11-27T12"))
        for index, unit in enumerate(units):
            assert int(minutes[f"{index:02d}/revenue".encode()]) == unit
    finally:
        if isinstance(store, SoleWriterStore):
            store.close()
        await redis.aclose()


async def test_a_sole_writer_loads_the_script_again_when_redis_lost_it(settings: Settings) -> None:
    # A commit goes out as EVALSHA of the script's digest; a Redis started afresh (or SCRIPT FLUSH)
    # answers NOSCRIPT, and the store loads the script and sends the commit again.
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    store = SoleWriterStore(redis, keys, claim_ttl_s=3600, writer=SyncRedis.from_url(settings.redis.url))
    try:
        values = [value for index, amount in enumerate(AMOUNTS[2:]) for value in won(index, amount)]
        processor = BatchProcessor(settings, store, no_rejects)
        stamp = int(AT.timestamp() * 1000)
        for offset, value in enumerate(values):
            await redis.script_flush()
            await processor.process([RawRecord("crm.events", 0, offset, stamp, None, value)])
            await store.flush()
        day = await redis.hgetall(keys.bucket("c", "day", "2026-11-27"))
        assert int(day[b"deals_won"]) == 2
        assert int(day[b"revenue"]) == sum(int(Decimal(amount) * MONEY_SCALE) for amount in AMOUNTS[2:])
    finally:
        store.close()
        await redis.aclose()
