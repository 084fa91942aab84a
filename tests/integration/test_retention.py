"""Retention against the real Redis: old buckets and deal histories disappear, recent ones stay, nothing
else is touched; and the worker's own sweeper does it on its timer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from services.kafka import ensure_product_topics
from services.kpis.contributions import Calendar, to_us
from services.kpis.windows import minute_location
from services.settings import Settings
from services.topics import BucketGranularity, RedisKeys
from streams.processor import BatchProcessor, DeadLetter, RawRecord
from streams.store import StateStore
from streams.sweeper import INDEXED, RetentionSweeper
from tests.integration.api_harness import wait_until
from tests.integration.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
OLD = NOW - timedelta(days=800)  # beyond every retention
MIDDLE = NOW - timedelta(days=100)  # days and months kept, minutes, hours and UTC days not
RECENT = NOW - timedelta(hours=2)


def event(event_id: str, kind: str, at: datetime, manager: str = "ann", **fields: Any) -> bytes:
    body = {"event_id": event_id, "type": kind, "occurred_at": at.isoformat(), "manager_id": manager, **fields}
    return json.dumps({"team_id": "north", **body}).encode()


class Feeder:
    """Applies batches of events through the real batch processor and Redis state store."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.keys = RedisKeys.from_settings(settings)
        store = StateStore(redis, self.keys, claim_ttl_s=3600)
        self.processor = BatchProcessor(settings, store, self.no_rejects)
        self.offset = 0

    @staticmethod
    async def no_rejects(letters: Sequence[DeadLetter]) -> None:
        raise AssertionError(f"unexpected rejects: {[letter.rejection for letter in letters]}")

    async def apply(self, *values: bytes) -> None:
        records = []
        for value in values:
            records.append(RawRecord("crm.events", 0, self.offset, int(NOW.timestamp() * 1000), None, value))
            self.offset += 1
        await self.processor.process(records)


def bucket_keys(keys: RedisKeys, at: datetime, scope: str = "m:ann") -> dict[str, str]:
    """granularity -> key of the scope's bucket holding ``at``, for every granularity."""
    labels = Calendar(ZoneInfo("UTC")).buckets(to_us(at))
    granularities: tuple[BucketGranularity, ...] = ("day", "month", "utcday", "hour", "minute")
    return {
        g: keys.bucket(scope, g, minute_location(label)[0] if g == "minute" else label)
        for g, label in zip(granularities, labels, strict=True)
    }


async def existing(redis: Redis, keys: dict[str, str]) -> set[str]:
    return {granularity for granularity, key in keys.items() if await redis.exists(key)}


async def test_sweep_deletes_what_aged_out_and_keeps_the_rest(make_settings: Any) -> None:
    settings: Settings = make_settings(retention={"sweep_batch": 3})  # small steps: many atomic rounds
    redis = Redis.from_url(settings.redis.url)
    feeder = Feeder(settings, redis)
    keys = feeder.keys
    created = {"customer_id": "acme", "amount": "100.00"}
    try:
        # History arrives in order, as an import would bring it: each batch within the retention of its time.
        await feeder.apply(
            event("o1", "call", OLD),
            event("o2", "deal_created", OLD, deal_id="old-won", **created),
            event("o3", "deal_won", OLD + timedelta(days=1), deal_id="old-won"),
            event("o4", "deal_created", OLD, deal_id="old-open", **created),
        )
        await feeder.apply(event("m1", "call", MIDDLE), event("m2", "meeting", MIDDLE + timedelta(minutes=3)))
        await feeder.apply(event("r1", "call", RECENT), event("r2", "deal_created", RECENT, deal_id="new", **created))
        before_current = await redis.hgetall(keys.current("c"))
        minute_keys_before = await redis.zcard(keys.bucket_index("minute"))

        sweeper = RetentionSweeper.from_settings(redis, settings)
        report = await sweeper.sweep()
        assert report is not None and report.complete
        assert report.watermark_us == to_us(RECENT)

        assert await existing(redis, bucket_keys(keys, OLD)) == set()
        assert await existing(redis, bucket_keys(keys, MIDDLE)) == {"day", "month"}
        assert await existing(redis, bucket_keys(keys, RECENT)) == {"day", "month", "utcday", "hour", "minute"}
        for scope in ("t:north", "c"):
            assert not await redis.exists(keys.bucket(scope, "day", OLD.date().isoformat()))
            assert await redis.exists(keys.bucket(scope, "day", MIDDLE.date().isoformat()))
        # The closed old deal is forgotten; the open one is current state and stays, as does the pipeline.
        assert not await redis.exists(keys.deal("old-won"))
        assert await redis.exists(keys.deal("old-open"))
        assert await redis.exists(keys.deal("new"))
        assert await redis.hgetall(keys.current("c")) == before_current
        assert await redis.zcard(keys.deal_index) == 0
        # 3 scopes x the hashes of the minutes of (OLD: call + deal_created x2 + won, in 2 hours;
        # MIDDLE: 2 minutes in 1 hour) deleted.
        assert report.deleted["minute"] == 3 * 3
        assert await redis.zcard(keys.bucket_index("minute")) == minute_keys_before - 9 == 3 * 1
        assert report.deleted["day"] == 3 * 2  # OLD and OLD + 1 day
        assert report.deleted["month"] == 3
        assert report.deleted["deal"] == 1
        # Every index entry left names an existing key, and every bucket key is indexed.
        for granularity in INDEXED:
            members = await redis.zrange(keys.bucket_index(granularity), 0, -1)
            assert await redis.exists(*members) == len(members)
            on_disk = [key async for key in redis.scan_iter(match=f"{keys.prefix}:kpi:{granularity}:*")]
            assert sorted(on_disk) == sorted(members)
        status = await redis.hgetall(keys.sweeper_status)
        assert status[b"deleted:minute"] == b"9" and status[b"watermark_us"] == str(to_us(RECENT)).encode()

        # Nothing more to do the second time; claims, offsets, directory and stats are untouched.
        again = await sweeper.sweep()
        assert again is not None and again.total == 0
        assert await redis.exists(keys.seen_event("o1"), keys.offsets, keys.managers, keys.worker_stats) == 4

        # A late event still within the history retention counts for its day, but recreates no minute.
        await feeder.apply(event("m3", "call", MIDDLE + timedelta(minutes=5)))
        assert await redis.hget(keys.bucket("m:ann", "day", MIDDLE.date().isoformat()), "calls") == b"2"
        assert await existing(redis, bucket_keys(keys, MIDDLE + timedelta(minutes=5))) == {"day", "month"}

        # A new event of the forgotten deal (its history was cached by the processor, so the commit's
        # digest check finds the key gone and the batch is redone) starts a new history.
        await feeder.apply(event("n1", "deal_stage_changed", RECENT, deal_id="old-won", stage="proposal"))
        history = json.loads(await redis.get(keys.deal("old-won")) or b"[]")
        assert [row[1] for row in history] == ["n1"]
    finally:
        await redis.aclose()


async def test_one_sweeper_at_a_time(settings: Settings) -> None:
    redis = Redis.from_url(settings.redis.url)
    keys = RedisKeys.from_settings(settings)
    try:
        feeder = Feeder(settings, redis)
        await feeder.apply(event("o1", "call", OLD))
        await feeder.apply(event("r1", "call", RECENT))
        await redis.set(keys.sweeper_lock, "another-worker", px=60_000)
        assert await RetentionSweeper.from_settings(redis, settings).sweep() is None
        assert await redis.exists(keys.bucket("m:ann", "minute", OLD.strftime("%Y-%m-%dT%H")))
        await redis.delete(keys.sweeper_lock)
        report = await RetentionSweeper.from_settings(redis, settings).sweep()
        assert report is not None and report.deleted["minute"] == 3
        assert not await redis.exists(keys.sweeper_lock)  # released
    finally:
        await redis.aclose()


async def test_change_feed_carries_only_day_month_and_current(settings: Settings) -> None:
    redis = Redis.from_url(settings.redis.url)
    keys = RedisKeys.from_settings(settings)
    try:
        await Feeder(settings, redis).apply(
            event("r1", "call", RECENT), event("r2", "deal_created", RECENT, deal_id="d", customer_id="x", amount="5")
        )
        entries = await redis.xrange(keys.changes)
        data = json.loads(entries[-1][1][b"data"])
        assert {bucket["g"] for bucket in data["buckets"]} == {"day", "month"}
        assert {current["scope"] for current in data["current"]} == {"m:ann", "t:north", "c"}
    finally:
        await redis.aclose()


async def test_the_worker_sweeps_on_its_timer(make_settings: Any, tmp_path: Path) -> None:
    settings: Settings = make_settings(retention={"sweep_interval_s": 0.5})
    await ensure_product_topics(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    old, recent = now - timedelta(days=800), now - timedelta(minutes=5)
    keys = RedisKeys.from_settings(settings)
    old_day = keys.bucket("m:ann", "day", old.date().isoformat())
    recent_minute = keys.bucket("m:ann", "minute", recent.strftime("%Y-%m-%dT%H"))  # its hour's minute hash
    redis = Redis.from_url(settings.redis.url)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    await producer.start()
    worker.start()
    try:

        async def processed(count: int) -> bool:
            return await redis.hget(keys.worker_stats, "processed") == str(count).encode()

        # The old event first, alone: within the retention of the watermark when it is applied.
        await producer.send_and_wait(settings.kafka.events_topic, event("o1", "call", old), key=b"ann", partition=0)
        await wait_until(lambda: processed(1), within=90, what="the old event")
        assert await redis.exists(old_day)
        await producer.send_and_wait(settings.kafka.events_topic, event("r1", "call", recent), key=b"ann", partition=0)

        async def swept() -> bool:
            return await processed(2) and not await redis.exists(old_day) and bool(await redis.exists(recent_minute))

        try:
            await wait_until(swept, within=60, interval=0.1, what="the worker's sweep")
        except AssertionError:
            raise AssertionError(f"not swept; worker log:\n{worker.log_tail()}") from None

        async def logged() -> bool:  # the log line is written after the keys are gone: poll it too
            return "retention sweep deleted" in worker.log_path.read_text()

        await wait_until(logged, within=30, interval=0.1, what="the sweep's log line")
    finally:
        worker.stop()
        await producer.stop()
        await redis.aclose()
