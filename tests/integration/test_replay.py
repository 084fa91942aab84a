"""Replay onto wiped state, the sole-writer path: the batch reference's numbers, whatever the batch size.

The sole writer reads nothing back from Redis: it sets a bucket's fields on its first write and adds
to them afterwards, and does not check claims. So the state must be the same whether a bucket is
written once (one batch) or by many batches, and the same as the checking path leaves (a replay that
keeps the state, as a history import runs it).

It also leaves out, from the first batch on, the buckets that the watermark it will end with expires
(told beforehand by the latest records of each partition): the checking path writes them, and the
sweeper would delete them. A guess that turns out too high (a repeated event id at the end of the
log) must not cost buckets: the replay then runs again without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from services import kafka
from services.kpis.retention import RetentionPolicy, bucket_end_s
from services.settings import Settings
from services.simulation import SimRecord
from services.simulation.sinks import KafkaSink
from services.topics import RedisKeys
from streams.replay import peek_watermark, replay, running_workers, wipe_state
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
        assert await replay(settings, wipe=False, batch_size=700, show_progress=False, read_state=True) == len(records)
        assert await kpi_hashes(redis, keys) == by_batches
    finally:
        await redis.aclose()


def unexpired(
    hashes: dict[str, dict[bytes, bytes]], settings: Settings, watermark_us: int
) -> dict[str, dict[bytes, bytes]]:
    """The hashes of ``kpi_hashes`` that the retention keeps at this watermark."""
    cutoffs = RetentionPolicy.from_settings(settings).cutoffs(watermark_us)
    kept = {}
    for name, value in hashes.items():
        if name.startswith("kpi:"):  # kpi:<granularity>:<label>:<scope>
            _, granularity, label, _ = name.split(":", 3)
            if bucket_end_s(granularity, label, settings.business.zone) <= cutoffs[granularity]:
                continue
        kept[name] = value
    return kept


async def test_a_long_log_writes_no_bucket_its_end_expires(settings: Settings) -> None:
    # A few days 100 days ago, then the last few days: the minute, hour and UTC-day buckets of the first
    # are past their 62-day retention at the end. The checking path writes them (the sweeper deletes
    # them later); the replay does not.
    records = await produce_simulated(settings, seed=29, days=100, count=1500)
    records += await produce_simulated(settings, seed=30, days=4, count=1500)
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        assert await replay(settings, batch_size=400, show_progress=False) == len(records)
        await assert_state_equals_reference(settings, redis, records)
        watermark_us = int(await redis.get(keys.watermark) or 0)
        assert await peek_watermark(settings) == watermark_us
        replayed = await kpi_hashes(redis, keys)

        await wipe_state(redis, keys)
        assert await replay(settings, wipe=False, batch_size=400, show_progress=False, read_state=True) == len(records)
        checked = await kpi_hashes(redis, keys)
        expired = checked.keys() - unexpired(checked, settings, watermark_us).keys()
        assert {name.split(":")[1] for name in expired} == {"minute", "hour", "utcday"}
        assert replayed == unexpired(checked, settings, watermark_us)
    finally:
        await redis.aclose()


async def test_a_repeated_event_id_at_the_end_of_the_log_costs_no_bucket(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # The events end 40 days ago; the last record repeats an earlier event's id with today's time. It is
    # ignored, so the watermark ends 40 days ago, not today as the peek says: with that guess the buckets
    # from 102 to 62 days ago would be left out. The replay must notice and run again without it.
    now = datetime.now(UTC)
    records = await produce_simulated(settings, seed=31, days=90, count=1500, end=now - timedelta(days=40))
    first = next(record for record in records if record.is_valid)
    late_copy = {**json.loads(first.value), "occurred_at": now.isoformat()}
    repeat = SimRecord(key=first.key, value=json.dumps(late_copy).encode(), expected="duplicate")
    async with KafkaSink(settings.kafka.bootstrap_servers, settings.kafka.events_topic) as sink:
        await sink.write([repeat])
    records.append(repeat)
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        peeked = await peek_watermark(settings)
        assert peeked is not None and peeked > int((now - timedelta(seconds=1)).timestamp() * 1_000_000)
        assert await replay(settings, batch_size=300, show_progress=False) == len(records)
        await assert_state_equals_reference(settings, redis, records)
        replayed = await kpi_hashes(redis, keys)

        await wipe_state(redis, keys)
        assert await replay(settings, wipe=False, batch_size=300, show_progress=False, read_state=True) == len(records)
        assert replayed == await kpi_hashes(redis, keys)  # nothing is past its retention at the end
        assert any(name.startswith("kpi:minute:") for name in replayed)

        # An import onto the emptied state takes the sole writer's path with the same guess, and must
        # notice and start again the same way (from a wiped state: it held nothing but its own writes).
        await wipe_state(redis, keys)
        with caplog.at_level(logging.WARNING, logger="streams.replay"):
            assert await replay(settings, wipe=False, batch_size=300, show_progress=False) == len(records)
        assert "replaying again without the guess" in caplog.text
        assert replayed == await kpi_hashes(redis, keys)
    finally:
        await redis.aclose()


async def test_replay_refuses_to_run_next_to_running_workers(settings: Settings) -> None:
    # A member of the workers' consumer group stands for a running worker: `crm-pulse replay` must not
    # wipe the state under it, and says why; --force replays anyway.
    records = await produce_simulated(settings, seed=37, days=5, count=300)
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    worker = kafka.consumer(settings, settings.kafka.events_topic, auto_offset_reset="latest")
    await worker.start()
    env = {**os.environ, **settings.to_environment()}

    def replay_command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.replay", "--quiet", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        deadline = time.monotonic() + 30
        while not await running_workers(settings):
            assert time.monotonic() < deadline, "the stand-in worker never joined its group"
            await worker.getmany(timeout_ms=200)
        marker = keys.bucket("c", "day", "2020-01-01")
        await redis.hset(marker, "calls", 1)

        refused = await asyncio.to_thread(replay_command)
        assert refused.returncode == 1
        assert "1 member(s) of the workers' consumer group" in refused.stderr
        assert "--force" in refused.stderr and "Traceback" not in refused.stderr
        assert await redis.exists(marker)  # nothing wiped

        forced = await asyncio.to_thread(replay_command, "--force")
        assert forced.returncode == 0, forced.stderr
        assert f"replayed {len(records):,} records" in forced.stdout
        assert not await redis.exists(marker)
    finally:
        await worker.stop()
        await redis.aclose()
