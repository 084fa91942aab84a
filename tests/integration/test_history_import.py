"""Importing a history file: to Kafka, state caught up in bulk, rejects in the dead-letter topic, exact KPIs."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from services import kafka
from services.kpis.periods import PeriodKind
from services.settings import Settings
from services.simulation import Simulation, SimulationConfig
from services.topics import RedisKeys
from streams import history_import
from streams.history_import import ImportStopped, import_history
from streams.replay import running_workers
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

    # Batches smaller than the file: a month's hash is touched by several of them.
    imported = await import_history(settings, history, show_progress=False, batch_size=1000)
    assert imported.sent == len(records) and imported.caught_up and not imported.workers

    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        reference, rejected, duplicates = reference_of(settings, records)
        accepted = len(records) - sum(rejected.values()) - duplicates
        await assert_worker_counters(redis, keys, reference, rejected, duplicates, accepted)
        async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
            await assert_api_equals_reference(api, reference, periods_of(reference, (PeriodKind.MONTH,)))
        assert Counter(await read_dead_letters(settings, sum(rejected.values()))) == malformed(records)
        await assert_feed_announces_each_bucket_once(redis, keys)
    finally:
        await redis.aclose()


async def test_a_second_import_reads_the_state_the_first_left(settings: Settings, tmp_path: Path) -> None:
    # The first import finds a state that holds nothing: it writes as the only writer, reading nothing
    # back. The second finds events there: it must read the state (claims, deals, customers, existing
    # buckets), so its overlapping months add to the first's numbers and its repeats of the first
    # file's lines count as duplicates. Both write the change feed at their end.
    config = SimulationConfig.from_business(settings.business, managers=6, teams=2, malformed=0.01)
    now = datetime.now(UTC)
    first = list(Simulation(config, seed=7).records(now - timedelta(days=60), end=now - timedelta(days=20), count=3000))
    second = list(Simulation(config, seed=8).records(now - timedelta(days=40), end=now, count=3000))
    second += first[::10]
    files = []
    for name, records in (("first", first), ("second", second)):
        files.append(tmp_path / f"{name}.jsonl")
        files[-1].write_bytes(b"".join(record.value + b"\n" for record in records))

    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        for path in files:
            await import_history(settings, path, show_progress=False, batch_size=700)
        reference, rejected, duplicates = reference_of(settings, first + second)
        assert duplicates >= len(first[::10]) - sum(1 for record in first[::10] if not record.is_valid)
        accepted = len(first) + len(second) - sum(rejected.values()) - duplicates
        await assert_worker_counters(redis, keys, reference, rejected, duplicates, accepted)
        async with running_api(settings, clock=lambda: datetime.now(UTC)) as api:
            periods = periods_of(reference, (PeriodKind.DAY, PeriodKind.MONTH))
            await assert_api_equals_reference(api, reference, periods)
        await assert_feed_announces_each_bucket_at_most_twice(redis, keys)
    finally:
        await redis.aclose()


async def feed_entries(redis: Redis, keys: RedisKeys) -> list[dict[str, Any]]:
    """The change feed's entries, decoded, oldest first."""
    return [orjson.loads(fields[b"data"]) for _, fields in await redis.xrange(keys.changes)]


async def assert_feed_announces_each_bucket_at_most_twice(redis: Redis, keys: RedisKeys) -> None:
    announced: Counter[str] = Counter()
    for entry in await feed_entries(redis, keys):
        announced.update(keys.bucket(b["scope"], b["g"], b["b"]) for b in entry.get("buckets", []))
    assert announced and max(announced.values()) <= 2


async def assert_feed_announces_each_bucket_once(redis: Redis, keys: RedisKeys) -> None:
    """The import wrote the change feed once, at its end: every day, month and current hash it holds,
    each in one entry only, with the values it holds (not a copy per batch)."""
    announced: Counter[str] = Counter()
    for entry in await feed_entries(redis, keys):
        for bucket in entry.get("buckets", []):
            key = keys.bucket(bucket["scope"], bucket["g"], bucket["b"])
            announced[key] += 1
            assert bucket["m"] == {k.decode(): v.decode() for k, v in (await redis.hgetall(key)).items()}, key
        for current in entry.get("current", []):
            key = keys.current(current["scope"])
            announced[key] += 1
            assert current["m"] == {k.decode(): v.decode() for k, v in (await redis.hgetall(key)).items()}, key
    stored = {
        key.decode()
        for pattern in (f"{keys.prefix}:kpi:day:*", f"{keys.prefix}:kpi:month:*", f"{keys.prefix}:cur:*")
        async for key in redis.scan_iter(match=pattern, count=1000)
    }
    assert stored and set(announced) == stored
    assert max(announced.values()) == 1


async def test_an_import_that_loses_redis_says_the_records_are_in_kafka(settings: Settings, tmp_path: Path) -> None:
    # Produced to the real broker, then the catch-up cannot reach Redis: the import stops saying the
    # records are in the events topic and to run `replay --keep`, not the import again.
    config = SimulationConfig.from_business(settings.business, managers=2, teams=1)
    records = list(Simulation(config, seed=9).records(datetime.now(UTC) - timedelta(days=3), count=50))
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(record.value + b"\n" for record in records))
    without_redis = settings.with_overrides(redis={"url": "redis://127.0.0.1:1"})

    with pytest.raises(ImportStopped) as stopped:
        await import_history(without_redis, history, show_progress=False)

    assert "Redis at redis://127.0.0.1:1 failed or cannot be reached" in str(stopped.value)
    assert f"the {len(records):,} records are in the events topic" in str(stopped.value)
    assert "run `crm-pulse replay --keep`" in str(stopped.value)
    produced = [m async for m in kafka.records_to_end(settings, settings.kafka.events_topic)]
    assert sorted(m.value for m in produced) == sorted(record.value for record in records)


async def test_an_import_leaves_the_records_to_running_workers(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A member of the workers' consumer group stands for a running worker: the import produces the
    # records and says the workers apply them, instead of a bulk catch-up that would meet their commits.
    config = SimulationConfig.from_business(settings.business, managers=2, teams=1)
    records = list(Simulation(config, seed=11).records(datetime.now(UTC) - timedelta(days=3), count=40))
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(record.value + b"\n" for record in records))
    await kafka.ensure_product_topics(settings)
    worker = kafka.consumer(settings, settings.kafka.events_topic, auto_offset_reset="earliest")
    await worker.start()
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    try:
        deadline = time.monotonic() + 30
        while not await running_workers(settings):
            assert time.monotonic() < deadline, "the stand-in worker never joined its group"
            await worker.getmany(timeout_ms=200)

        imported = await import_history(settings, history, show_progress=False)

        assert imported.sent == len(records) and imported.workers == 1 and not imported.caught_up
        assert not await redis.exists(keys.offsets, keys.watermark)  # the state is the workers' to bring up
        produced = [m async for m in kafka.records_to_end(settings, settings.kafka.events_topic)]
        assert sorted(m.value for m in produced) == sorted(record.value for record in records)

        # The command says plainly that it worked (the ids are known now: a second copy is ignored).
        monkeypatch.setattr(history_import, "load_settings", lambda: settings)
        code = await asyncio.to_thread(history_import.main, [str(history), "--quiet"])
        out = capsys.readouterr().out
        assert code == 0
        assert "running worker(s) are applying them now; nothing more to do" in out
        assert f"{len(records):,} records: " in out
    finally:
        await worker.stop()
        await redis.aclose()


async def test_an_import_of_nothing_valid_reports_the_reasons_and_fails(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "bad.jsonl"
    history.write_text('{"event_id": "e1", "type": "call"}\nnot json\n{"event_id": "e2", "type": "teleport"}\n')
    monkeypatch.setattr(history_import, "load_settings", lambda: settings)

    code = await asyncio.to_thread(history_import.main, [str(history), "--quiet"])

    captured = capsys.readouterr()
    assert code == 1
    assert "imported" not in captured.out
    assert "nothing to import" in captured.err
    assert "3 records: 0 accepted, 3 rejected (2 schema_violation, 1 invalid_json), 0 duplicates" in captured.err
    assert settings.kafka.dlq_topic in captured.err
    dead = await read_dead_letters(settings, 3)
    assert len(dead) == 3  # nothing dropped: every rejected record is in the dead-letter topic
