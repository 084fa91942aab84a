"""A Redis outage in the middle of the stream: the worker waits it out and loses nothing.

The test runs a Redis of its own (the session's is shared by other tests), stops it while the
worker has records to apply, produces more meanwhile, starts it again from its append-only file,
and checks the worker (the same process, never restarted) ends with exactly the reference.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.kafka import ensure_product_topics
from services.localinfra.redis_server import RedisServer
from services.settings import Settings
from services.simulation import Simulation, SimulationConfig
from services.simulation.sinks import KafkaSink
from services.topics import RedisKeys
from tests.integration.api_harness import wait_until
from tests.integration.pipeline_checks import (
    assert_state_equals_reference,
    worker_reached,
)
from tests.integration.worker_process import running_worker

pytestmark = pytest.mark.integration

DEADLINE_S = 180.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize("batch_process", [True, False], ids=["batch-process", "in-process"])
async def test_worker_waits_out_a_redis_outage_and_loses_nothing(
    make_settings, tmp_path: Path, batch_process: bool
) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(home=tmp_path / "redis", port=free_port(), start_timeout_s=30.0)
    server.start()
    try:
        settings: Settings = make_settings(
            redis={"url": server.url()}, worker={"batch_size": 200, "batch_process": batch_process}
        )
        await ensure_product_topics(settings)
        config = SimulationConfig.from_business(settings.business, managers=6, teams=2, duplicates=0.02, malformed=0.01)
        records = list(Simulation(config, seed=5).records(datetime.now(UTC) - timedelta(days=20), count=3000))
        first, second = records[:1500], records[1500:]
        keys = RedisKeys.from_settings(settings)

        async with KafkaSink(settings.kafka.bootstrap_servers, settings.kafka.events_topic) as sink:
            await sink.write(first)
            with running_worker(settings, tmp_path / "worker.log") as worker:
                redis = Redis.from_url(settings.redis.url)
                try:
                    await wait_until(lambda: worker_reached(redis, keys, len(first)), within=DEADLINE_S, what="part 1")
                finally:
                    await redis.aclose()

                server.stop()  # SIGTERM: Redis writes its append-only file and exits
                await sink.write(second)
                await wait_until(
                    lambda: _async_true("not applied" in worker.log_text()),
                    within=DEADLINE_S,
                    what="the worker to notice the outage",
                )
                server.start()

                redis = Redis.from_url(settings.redis.url)
                try:
                    try:
                        await wait_until(
                            lambda: worker_reached(redis, keys, len(records)), within=DEADLINE_S, what="part 2"
                        )
                    except AssertionError:
                        raise AssertionError(f"worker did not catch up; log tail:\n{worker.log_tail()}") from None
                    assert worker.running(), "the worker must ride out the outage, not exit"

                    await assert_state_equals_reference(settings, redis, records)
                finally:
                    await redis.aclose()
    finally:
        server.stop()


async def _async_true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("batch_process", [True, False], ids=["batch-process", "in-process"])
async def test_worker_reads_again_when_redis_comes_back_from_an_older_copy(  # type: ignore[no-untyped-def]
    make_settings, tmp_path: Path, batch_process: bool
) -> None:
    # Redis restored from a backup (or an AOF that lost its last second) holds offsets behind what
    # the running worker has read. The worker must read those records again, not carry on past them.
    settings: Settings = make_settings(worker={"batch_size": 200, "batch_process": batch_process})
    await ensure_product_topics(settings)
    config = SimulationConfig.from_business(settings.business, managers=6, teams=2, duplicates=0.02, malformed=0.01)
    records = list(Simulation(config, seed=8).records(datetime.now(UTC) - timedelta(days=20), count=3000))
    parts = records[:1500], records[1500:2500], records[2500:]
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        async with KafkaSink(settings.kafka.bootstrap_servers, settings.kafka.events_topic) as sink:
            with running_worker(settings, tmp_path / "worker.log") as worker:
                done = 0
                backup: dict[bytes, tuple[bytes, int]] = {}
                for number, part in enumerate(parts):
                    await sink.write(part)
                    done += len(part)
                    await wait_until(
                        lambda done=done: worker_reached(redis, keys, done), within=DEADLINE_S, what=f"part {number}"
                    )
                    if number == 0:
                        backup = await _dump_prefix(redis, keys.prefix)
                    if number == 1:
                        await _restore_prefix(redis, keys.prefix, backup)
                        assert await worker_stats_processed(redis, keys) < done  # the state really went back
                assert worker.running()

        await assert_state_equals_reference(settings, redis, records)
        assert "reading again from there" in worker.log_text()
    finally:
        await redis.aclose()


async def _dump_prefix(redis: Redis, prefix: str) -> dict[bytes, tuple[bytes, int]]:
    saved: dict[bytes, tuple[bytes, int]] = {}
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        dumped = await redis.dump(key)
        if dumped is not None:
            saved[key] = (dumped, max(0, await redis.pttl(key)))
    assert saved
    return saved


async def _restore_prefix(redis: Redis, prefix: str, saved: dict[bytes, tuple[bytes, int]]) -> None:
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        await redis.unlink(key)
    for key, (dumped, ttl_ms) in saved.items():
        await redis.restore(key, ttl_ms, dumped, replace=True)


async def worker_stats_processed(redis: Redis, keys: RedisKeys) -> int:
    return int(await redis.hget(keys.worker_stats, "processed") or 0)
