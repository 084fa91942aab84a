"""Two stream workers in one group as static members (issue 19): they share the stream, and one that
goes away for good hands its partitions over within a stated bound (at once when it stops on purpose)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.kafka import ensure_product_topics
from services.settings import Settings
from services.topics import RedisKeys
from tests.integration.api_harness import wait_until
from tests.integration.pipeline_checks import assert_worker_counters, reference_of, worker_reached
from tests.integration.test_fast_restart import produce_paced, simulated
from tests.integration.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_S = 10.0
GONE_MARGIN_S = 15.0
"""A member killed for good: its partitions are consumed again within the session timeout + this."""
LEFT_BOUND_S = 10.0
"""A member stopped with SIGTERM leaves the group: the others take over within this (session timeout 30 s)."""


def group_of_two(settings: Settings, tmp_path: Path) -> tuple[WorkerProcess, WorkerProcess]:
    second = settings.with_overrides(worker={"web_port": settings.worker.web_port + 1})
    return WorkerProcess(settings, tmp_path / "first.log"), WorkerProcess(second, tmp_path / "second.log")


def assigned_events_partitions(worker: WorkerProcess, topic: str) -> str:
    """The partitions of ``topic`` in the last assignment table the worker logged ('' if none yet)."""
    found = re.findall(rf"\|\s*{re.escape(topic)}\s*\|\s*\{{([^}}]*)\}}", worker.log_text())
    return found[-1] if found else ""


async def both_assigned(first: WorkerProcess, second: WorkerProcess, topic: str) -> bool:
    return bool(assigned_events_partitions(first, topic) and assigned_events_partitions(second, topic))


async def start_group(settings: Settings, tmp_path: Path) -> tuple[WorkerProcess, WorkerProcess]:
    first, second = group_of_two(settings, tmp_path)
    first.start()
    second.start()
    topic = settings.kafka.events_topic
    try:
        await wait_until(lambda: both_assigned(first, second, topic), within=60, what="both workers assigned")
    except AssertionError:
        raise AssertionError(f"first:\n{first.log_tail()}\nsecond:\n{second.log_tail()}") from None
    return first, second


async def assert_exact(settings: Settings, records, redis: Redis, keys: RedisKeys) -> None:  # type: ignore[no-untyped-def]
    reference, rejected, duplicates = reference_of(settings, records)
    accepted = len(records) - sum(rejected.values()) - duplicates
    await assert_worker_counters(redis, keys, reference, rejected, duplicates, accepted)


@pytest.mark.parametrize("stop", ["sigkill", "sigterm"])
async def test_a_worker_gone_for_good_hands_its_partitions_over(make_settings, tmp_path: Path, stop: str) -> None:  # type: ignore[no-untyped-def]
    session = SESSION_TIMEOUT_S if stop == "sigkill" else 30.0
    bound = session + GONE_MARGIN_S if stop == "sigkill" else LEFT_BOUND_S
    settings: Settings = make_settings(
        kafka={"partitions": 4},
        worker={"batch_size": 200, "batch_within_s": 0.02},
        membership={"session_timeout_s": session, "heartbeat_s": 1.0},
    )
    await ensure_product_topics(settings)
    records = simulated(settings, 8_000, seed=29)
    half = len(records) // 2
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    first, second = await start_group(settings, tmp_path)
    try:
        await produce_paced(settings, records[:half], per_second=4_000)
        await wait_until(lambda: worker_reached(redis, keys, half), within=120, what="the first half")
        gone = time.monotonic()
        if stop == "sigkill":
            second.kill()
        else:
            second.stop()  # SIGTERM, waits for the exit
        await produce_paced(settings, records[half:], per_second=4_000)  # to every partition, the dead one's too
        try:
            await wait_until(
                lambda: worker_reached(redis, keys, len(records)), within=bound, interval=0.05, what="the rest"
            )
        except AssertionError:
            raise AssertionError(f"not taken over within {bound} s:\n{first.log_tail()}") from None
        took = time.monotonic() - gone
        assert first.running()
    finally:
        first.stop()
        second.stop()
    print(f"{stop}: the survivor had every partition's records {took:.1f} s after the other went away")
    assert assigned_events_partitions(first, settings.kafka.events_topic) == "0-3"
    if stop == "sigterm":
        assert "left consumer group" in second.log_text()
    await assert_exact(settings, records, redis, keys)
    await redis.aclose()
