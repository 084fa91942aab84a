"""Stream-worker throughput against its baselines, on one topic produced once per run.

``python -m bench.worker_throughput --events 100000 --partitions 4``

Produces N simulated events (valid only, or with ``--faults``) to a fresh topic, then reads
that same topic, each time with a fresh consumer group and Redis key prefix:

  (a)  a bare aiokafka consumer that json.loads every value           (baseline)
  (b)  a no-op faust agent, ``async for value in stream: pass``        (bench/faust_noop.py)
  (b2) a no-op faust agent using ``stream.take_events`` with the worker's batch settings
  (c)  the real worker, ``python -m streams.worker``, one process
  (d)  two worker processes in one consumer group
  (e)  ``python -m streams.replay``, the bulk path around faust
  (f)  ``python -m streams.replay --keep`` onto empty state: the path of a first history import (a
       state that holds nothing yet has no other writer: it reads nothing back, like (e))
  (g)  ``python -m streams.replay --keep`` onto a state that holds events: the path of an import
       into a running deployment (it reads the state like a worker does and overlaps each commit
       with the next batch). The bench marks the fresh prefix as a deployment that has run until
       now: its watermark is the log's latest event time.

Throughput is events / (time from the first events processed to the last): process start-up
and the consumer-group join are left out. The workers and replay are watched through the Redis
stats hash (polled every 50 ms: first non-zero to reaching N); the faust no-op apps write their
own first/last times to Redis; the bare consumer runs in this process. (c) to (g) must end
with exactly the same KPI state: every KPI bucket and current-state hash, the directory sets
and the stats are compared, and a PASS/FAIL line is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from bench.processes import ChildProcess, CpuWindow
from bench.reporting import append_result, fmt, ratio, source_digest
from bench.servers import BenchServers, bench_servers, say
from services import kafka
from services.settings import Settings
from services.simulation import Simulation, SimulationConfig
from services.simulation.sinks import KafkaSink
from services.topics import RedisKeys
from streams.replay import peek_watermark

NAME = "worker_throughput"
STAGES = ("a", "b", "b2", "c", "d", "e", "f", "g")
TITLES = {
    "a": "bare aiokafka consumer + json.loads",
    "b": "faust no-op agent, per event",
    "b2": "faust no-op agent, take_events",
    "c": "worker x1 (streams.worker)",
    "d": "worker x2, one group",
    "e": "replay (streams.replay)",
    "f": "import onto empty state",
    "g": "import onto a state with events",
}
FAULTS = {"duplicates": 0.02, "out_of_order": 0.05, "malformed": 0.02}
"""The fault mix of ``--faults`` (the simulator's own defaults are all 0; this is the integration test's mix)."""
CORES = os.cpu_count() or 1
POLL_S = 0.05
PROGRESS_S = 3.0
RESUMING = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*resuming (\d+) partitions")
READING = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*replay: reading \d+ records")
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"
BULK = ("e", "f", "g")
"""The replay stages: watched from the replay's "reading" log line (they apply large batches)."""


@dataclass
class Measurement:
    """One stage's figures."""

    stage: str
    title: str
    ok: bool = False
    events: int = 0
    """Events processed inside the measured window."""
    seconds: float | None = None
    rate: float | None = None
    wall_s: float | None = None
    """From starting the process (or consumer) to the last event: start-up and group join included."""
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    """CPU seconds used inside the measured window, per process."""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_us_per_event(self) -> float | None:
        """CPU time of the measured process(es) per event: far less disturbed by other load than the rate."""
        own = [v for k, v in self.cpu_s.items() if k not in ("redis", "kafka", "others") and v is not None]
        return sum(own) / self.events * 1e6 if own and self.events else None

    @property
    def redis_us_per_event(self) -> float | None:
        used = self.cpu_s.get("redis")
        return used / self.events * 1e6 if used is not None and self.events else None


# -- producing --------------------------------------------------------------------------------


async def produce(settings: Settings, count: int, *, faults: bool, seed: int, managers: int | None) -> dict[str, Any]:
    """Write ``count`` simulated records to the events topic; what was written, by expected outcome."""
    # The simulator's default organisation (12 managers, 3 teams), grown for large counts so the
    # history fits in the retention period (about 32 events per manager and day).
    managers = managers or max(12, math.ceil(count / 9000))
    teams = max(3, managers // 4)
    rates = FAULTS if faults else {}
    config = SimulationConfig.from_business(settings.business, managers=managers, teams=teams, **rates)
    simulation = Simulation(config, seed=seed)
    per_day = simulation.expected_events_per_day() * (1 + sum(rates.values()))
    now = datetime.now(UTC)
    days = math.ceil(count / per_day * 1.25) + 1
    start = now - timedelta(days=days)
    if days > settings.business.history_retention_days:
        say(f"warning: {days} days of history exceed the retention; use more managers or fewer events")
    expected: Counter[str] = Counter()
    began = time.monotonic()
    records = simulation.records(start, end=now, count=count)
    written = 0
    async with KafkaSink(settings.kafka.bootstrap_servers, settings.kafka.events_topic) as sink:
        chunk = []
        for record in records:
            chunk.append(record)
            if len(chunk) >= 10_000:
                await sink.write(chunk)
                written += len(chunk)
                expected.update(r.expected for r in chunk)
                chunk = []
                if written % 50_000 == 0:
                    say(f"produced {written:,}/{count:,}")
        if chunk:
            await sink.write(chunk)
            written += len(chunk)
            expected.update(r.expected for r in chunk)
    elapsed = time.monotonic() - began
    per_partition = await partition_sizes(settings)
    say(
        f"produced {written:,} records in {elapsed:.1f} s ({managers} managers, {teams} teams, {days} days); "
        f"per partition {per_partition}"
    )
    return {
        "per_partition": per_partition,
        "records": written,
        "expected": dict(expected),
        "managers": managers,
        "teams": teams,
        "days": days,
        "seconds": round(elapsed, 3),
        "fault_rates": rates,
    }


async def partition_sizes(settings: Settings) -> list[int]:
    """Records in each partition of the events topic (keys are deal or manager ids: expect some skew)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.kafka.events_topic, p) for p in range(settings.kafka.partitions)]
        ends = await consumer.end_offsets(tps)
        return [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


# -- (a) bare consumer ------------------------------------------------------------------------


BARE_BATCH = 10_000
"""Records per ``getmany`` of the bare consumer; its window starts after the first such batch."""


async def measure_bare_consumer(settings: Settings, servers: BenchServers, count: int, within: float) -> Measurement:
    result = Measurement("a", TITLES["a"])
    consumer = kafka.consumer(
        settings,
        settings.kafka.events_topic,
        group_id=f"bench-a-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    cpu = CpuWindow({"bench": os.getpid(), "redis": servers.redis_pid(), "kafka": servers.kafka_pid()})
    began = time.monotonic()
    await consumer.start()
    try:
        seen = 0
        first: tuple[float, int, float] | None = None
        deadline = began + within
        next_progress = began + PROGRESS_S
        while seen < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=BARE_BATCH)
            for messages in batches.values():
                for message in messages:
                    try:
                        json.loads(message.value)
                    except ValueError:  # a malformed record (--faults): decoding it was the work
                        pass
                seen += len(messages)
            now = time.monotonic()
            if first is None and seen:
                first = (now, seen, time.process_time())
                cpu.begin()
            if now >= next_progress:
                say(f"(a) {seen:,}/{count:,}")
                next_progress = now + PROGRESS_S
        last = time.monotonic()
        if seen >= count and first is not None:
            result.ok = True
            result.events = seen - first[1]
            result.seconds = last - first[0]
            result.rate = result.events / result.seconds if result.seconds > 0 else None
            result.wall_s = last - began
            result.cpu_s = cpu.end()
        else:
            result.notes.append(f"timed out after {within:.0f} s at {seen:,}/{count:,}")
    finally:
        await consumer.stop()
    return result


# -- watching child processes -----------------------------------------------------------------


async def stats_total(redis: Redis, keys: RedisKeys) -> int:
    """Records the worker (or replay) has accounted for: processed + duplicates + rejected."""
    return sum(int(v) for v in (await redis.hgetall(keys.worker_stats)).values())


async def watch_stats(
    stage: str,
    redis: Redis,
    keys: RedisKeys,
    count: int,
    children: list[ChildProcess],
    servers: BenchServers,
    within: float,
) -> tuple[Measurement, list[tuple[float, int]]]:
    """Poll the stats hash every 50 ms: first non-zero to ``count``; also the (wall time, total) series.

    The replay applies large batches, so its first batch would fall before a first non-zero total:
    its window starts at its log line saying it starts reading (the CPU window when that line is seen).
    """
    result = Measurement(stage, TITLES[stage])
    cpu = CpuWindow({**{c.label: c.pid for c in children}, "redis": servers.redis_pid(), "kafka": servers.kafka_pid()})
    began = min(c.started_at for c in children)
    deadline = time.monotonic() + within
    next_progress = time.monotonic() + PROGRESS_S
    series: list[tuple[float, int]] = []
    first: tuple[float, int] | None = None
    total = 0
    while time.monotonic() < deadline:
        total = await stats_total(redis, keys)
        now = time.monotonic()
        series.append((time.time(), total))
        if first is None and stage in BULK:
            found = READING.search(children[0].log_text())
            if found:
                logged = datetime.strptime(found.group(1), LOG_TIME).timestamp()
                first = (now - max(time.time() - logged, 0.0), 0)
                cpu.begin()
        elif first is None and total:
            first = (now, total)
            cpu.begin()
        if total >= count:
            assert first is not None
            result.cpu_s = cpu.end()
            result.ok = True
            result.events = total - first[1]
            result.seconds = now - first[0]
            result.rate = result.events / result.seconds if result.seconds > 0 else None
            result.wall_s = now - began
            if total > count:
                result.notes.append(f"stats total {total:,} exceeds the {count:,} records produced")
            return result, series
        dead = [c for c in children if not c.running()]
        if dead and stage not in BULK:
            result.notes.append(f"{dead[0].label} exited early; log tail:\n{dead[0].log_tail()}")
            return result, series
        if stage in BULK and dead and total < count:
            await asyncio.sleep(0.2)  # replay exited: one more read
            if await stats_total(redis, keys) < count:
                result.notes.append(f"replay exited at {total:,}/{count:,}; log tail:\n{dead[0].log_tail()}")
                return result, series
        if now >= next_progress:
            rate = (total - first[1]) / (now - first[0]) if first and now > first[0] else 0.0
            say(f"({stage}) {total:,}/{count:,}  {rate:,.0f}/s")
            next_progress = now + PROGRESS_S
        await asyncio.sleep(POLL_S)
    result.notes.append(f"timed out after {within:.0f} s at {total:,}/{count:,}")
    return result, series


async def note_batches(result: Measurement, redis: Redis, keys: RedisKeys, count: int) -> None:
    """Batches committed, from the change feed (one entry per batch that changed a KPI)."""
    if result.ok:
        commits = int(await redis.xlen(keys.changes))
        result.extra["commits"] = commits
        result.extra["mean_batch"] = round(count / commits, 1) if commits else None


def final_assignment(children: list[ChildProcess], partitions: int) -> float | None:
    """Wall time of the last partition assignment of a group of workers (from their logs), if complete."""
    latest: list[tuple[float, int]] = []
    for child in children:
        found = RESUMING.findall(child.log_text())
        if not found:
            return None
        stamp, assigned = found[-1]
        latest.append((datetime.strptime(stamp, LOG_TIME).timestamp(), int(assigned)))
    if sum(assigned for _, assigned in latest) != partitions:
        return None
    return max(stamp for stamp, _ in latest)


def total_at(series: list[tuple[float, int]], moment: float) -> int:
    before = [total for stamp, total in series if stamp <= moment]
    return before[-1] if before else 0


# -- (b) faust no-op, (c)/(d) workers, (e) replay -------------------------------------------


async def measure_faust_noop(
    stage: str, servers: BenchServers, topic: dict[str, Any], count: int, within: float
) -> Measurement:
    mode = "each" if stage == "b" else "take"
    settings = servers.fresh(stage, kafka=topic)
    report_key = f"{settings.redis.key_prefix}:noop"
    child = ChildProcess(
        f"faust-noop-{mode}",
        "bench.faust_noop",
        ["--mode", mode, "--expected", str(count), "--report-key", report_key],
        settings,
        servers.logs / f"{settings.redis.key_prefix}-faust-noop.log",  # (unique per round)
    ).start()
    result = Measurement(stage, TITLES[stage])
    redis = Redis.from_url(settings.redis.url)
    cpu = CpuWindow({child.label: child.pid, "redis": servers.redis_pid(), "kafka": servers.kafka_pid()})
    try:
        deadline = time.monotonic() + within
        next_progress = time.monotonic() + PROGRESS_S
        began_cpu = False
        while time.monotonic() < deadline:
            raw: dict[bytes, bytes] = await redis.hgetall(report_key)  # type: ignore[assignment]
            report = {k.decode(): v.decode() for k, v in raw.items()}
            if "first_ts" in report and not began_cpu:
                cpu.begin()
                began_cpu = True
            if "last_ts" in report:
                result.cpu_s = cpu.end()
                first_ts, last_ts = float(report["first_ts"]), float(report["last_ts"])
                result.ok = True
                result.events = int(report["count"]) - int(report["first_count"])
                result.seconds = last_ts - first_ts
                result.rate = result.events / result.seconds if result.seconds > 0 else None
                result.wall_s = time.monotonic() - child.started_at
                return result
            if not child.running():
                result.notes.append(f"faust no-op app exited early; log tail:\n{child.log_tail()}")
                return result
            if time.monotonic() >= next_progress:
                say(f"({stage}) {int(report.get('count', 0)):,}/{count:,}")
                next_progress = time.monotonic() + PROGRESS_S
            await asyncio.sleep(POLL_S)
        result.notes.append(f"timed out after {within:.0f} s; log tail:\n{child.log_tail()}")
        return result
    finally:
        child.stop()
        await redis.aclose()


async def measure_workers(
    stage: str,
    servers: BenchServers,
    topic: dict[str, Any],
    count: int,
    workers: int,
    within: float,
    *,
    profile: Path | None = None,
) -> tuple[Measurement, Settings]:
    settings = servers.fresh(stage, kafka=topic)
    keys = RedisKeys.from_settings(settings)
    children = [
        ChildProcess(
            f"worker{index + 1}",
            "streams.worker",
            ["--loglevel", "info", "--web-port", str(46066 + index)],
            settings,
            servers.logs / f"{settings.redis.key_prefix}-worker{index + 1}{'-profile' if profile else ''}.log",
            python_args=["-m", "cProfile", "-o", str(profile)] if profile else (),
        )
        for index in range(workers)
    ]
    for child in children:
        child.start()
    redis = Redis.from_url(settings.redis.url)
    try:
        result, series = await watch_stats(stage, redis, keys, count, children, servers, within)
        await note_batches(result, redis, keys, count)
        if result.ok:
            conflicts = sum(child.log_text().count("conflicted with concurrent state") for child in children)
            result.extra["conflicts"] = conflicts
        if result.ok and workers > 1:
            steady_since = final_assignment(children, topic["partitions"])
            done_at = series[-1][0]
            first_at = next(stamp for stamp, total in series if total)
            result.extra["first_progress_rate"] = result.rate
            if steady_since is None:
                result.notes.append("could not read the final partition assignment from the worker logs")
            elif steady_since > first_at:
                done_before = total_at(series, steady_since)
                result.extra["rebalanced_after_start"] = True
                result.extra["events_before_final_assignment"] = done_before
                if count - done_before >= count // 5:
                    result.events = count - done_before
                    result.seconds = done_at - steady_since
                    result.rate = result.events / result.seconds
                    result.notes.append(
                        f"rate measured after the final rebalance ({done_before:,} events were processed "
                        "before it; first-progress rate in extra)"
                    )
                else:
                    result.notes.append(
                        f"the final rebalance came after {done_before:,} of {count:,} events: rate includes it; "
                        "use more events"
                    )
        return result, settings
    finally:
        for child in children:
            child.stop()
        await redis.aclose()


async def measure_replay(
    servers: BenchServers,
    topic: dict[str, Any],
    count: int,
    within: float,
    *,
    profile: Path | None = None,
    stage: str = "e",
) -> tuple[Measurement, Settings]:
    settings = servers.fresh(stage, kafka=topic)
    keys = RedisKeys.from_settings(settings)
    if stage == "g":
        # A deployment that has run until now: its watermark is the log's latest event time (which the
        # replays end with too). A state holds events when it holds offsets or a watermark.
        latest = await peek_watermark(settings)
        seeding = Redis.from_url(settings.redis.url)
        try:
            await seeding.set(keys.watermark, latest or 1)
        finally:
            await seeding.aclose()
    child = ChildProcess(
        "replay",
        "streams.replay",
        ["--quiet", *(["--keep"] if stage in ("f", "g") else [])],
        settings,
        servers.logs / f"{settings.redis.key_prefix}-replay{'-profile' if profile else ''}.log",
        python_args=["-m", "cProfile", "-o", str(profile)] if profile else (),
    ).start()
    redis = Redis.from_url(settings.redis.url)
    try:
        # (No batch count: a replay writes no change-feed entry per batch, and the import path only
        # its final announcements.)
        result, _ = await watch_stats(stage, redis, keys, count, [child], servers, within)
        if child.wait(timeout=60) is None:
            result.notes.append("replay did not exit within 60 s of finishing")
        return result, settings
    finally:
        child.stop()
        await redis.aclose()


# -- comparing the state ---------------------------------------------------------------------


async def kpi_state(redis: Redis, prefix: str) -> dict[str, Any]:
    """Every KPI bucket and current-state hash, the directory sets, the stats and the watermark, keyed
    without the prefix."""
    state: dict[str, Any] = {}
    names: list[bytes] = []
    for pattern in ("kpi:*", "cur:*", "dir:*"):
        names += [key async for key in redis.scan_iter(match=f"{prefix}:{pattern}", count=5000)]
    names.append(f"{prefix}:stats".encode())
    watermark = await redis.get(f"{prefix}:watermark")
    state["watermark"] = watermark.decode() if isinstance(watermark, bytes) else watermark
    types = await _pipelined(redis, [("type", name) for name in names])
    reads = [("hgetall" if kind == b"hash" else "smembers", name) for name, kind in zip(names, types, strict=True)]
    values = await _pipelined(redis, reads)
    for name, value in zip(names, values, strict=True):
        key = name.decode().removeprefix(f"{prefix}:")
        if isinstance(value, dict):
            state[key] = {k.decode(): v.decode() for k, v in value.items()}
        else:
            state[key] = sorted(member.decode() for member in value)
    return state


async def _pipelined(redis: Redis, calls: list[tuple[str, bytes]]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(calls), 2000):
        async with redis.pipeline(transaction=False) as pipe:
            for method, name in calls[start : start + 2000]:
                getattr(pipe, method)(name)
            out += await pipe.execute()
    return out


def expired_keys(state: dict[str, Any], settings: Settings) -> set[str]:
    """The bucket keys of a state that the retention policy counts as expired at the state's watermark.

    Expired buckets are outside every readable period and window, and their content depends on
    batch boundaries: a batch drops the deltas of rolling-window buckets (hour, minute, UTC day)
    already expired for the watermark it read, and the worker's sweeper (a 60 s timer) deletes
    them while replay does not. So they are not compared.
    """
    try:
        from services.kpis.retention import RetentionPolicy, bucket_end_s
    except ImportError:  # a tree without retention: every bucket is kept
        return set()
    watermark = state.get("watermark")
    if not watermark:
        return set()
    cutoffs = RetentionPolicy.from_settings(settings).cutoffs(int(watermark))
    zone = settings.business.zone
    expired: set[str] = set()
    for key in state:
        if not key.startswith("kpi:"):
            continue
        granularity, rest = key[4:].split(":", 1)
        # Scope last: "c", or "<kind>:<id>" (ids hold no colon); the bucket label before it.
        parts = rest.split(":")
        label = ":".join(parts[:-1] if parts[-1] == "c" else parts[:-2])
        try:
            if bucket_end_s(granularity, label, zone) <= cutoffs[granularity]:
                expired.add(key)
        except (KeyError, ValueError):
            continue
    return expired


def compare_states(states: dict[str, dict[str, Any]], settings: Settings) -> tuple[bool, list[str], list[str]]:
    """Whether all states are equal outside expired buckets (problems, a few), and notes."""
    labels = list(states)
    reference_label = labels[0]
    expired: set[str] = set()
    for state in states.values():
        expired |= expired_keys(state, settings)
    notes = [f"{len(expired):,} expired buckets (retention, at the final watermark) not compared"] if expired else []
    live = {label: {k: v for k, v in state.items() if k not in expired} for label, state in states.items()}
    reference = live[reference_label]
    problems: list[str] = []
    for label in labels[1:]:
        other = live[label]
        missing = sorted(set(reference) - set(other))
        extra = sorted(set(other) - set(reference))
        differing = sorted(k for k in set(reference) & set(other) if reference[k] != other[k])
        if missing:
            problems.append(f"({label}) lacks {len(missing)} keys of ({reference_label}), e.g. {missing[:3]}")
        if extra:
            problems.append(f"({label}) has {len(extra)} keys ({reference_label}) lacks, e.g. {extra[:3]}")
        for key in differing[:3]:
            problems.append(f"({label}) {key} = {other[key]} but ({reference_label}) has {reference[key]}")
        if len(differing) > 3:
            problems.append(f"({label}) differs from ({reference_label}) in {len(differing)} keys in all")
    return not problems, problems, notes


# -- the run ---------------------------------------------------------------------------------


def print_profile(path: Path, lines: int) -> str:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(lines)
    stats.sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


async def run(args: argparse.Namespace) -> int:
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:4]
    stages = [s for s in STAGES if s in args.only]
    if "d" in stages and args.partitions < 2:
        say("(d) needs at least 2 partitions: skipped")
        stages.remove("d")
    with bench_servers(run_id) as servers:
        topic = {
            "events_topic": f"bench.events.{run_id}",
            "dlq_topic": f"bench.events.dlq.{run_id}",
            "updates_topic": f"bench.updates.{run_id}",
            "partitions": args.partitions,
        }
        base = servers.settings.with_overrides(kafka=topic)
        await kafka.ensure_topics(base, [topic["events_topic"], topic["dlq_topic"]], args.partitions)
        produced = await produce(base, args.events, faults=args.faults, seed=args.seed, managers=args.managers)
        count = produced["records"]
        if count < args.events:
            say(f"warning: the simulation produced only {count:,} records")

        rounds: list[dict[str, Measurement]] = []
        settings_of: dict[str, Settings] = {}
        compared: list[str]
        # A freshly started broker is still JIT-compiling: read the topic once, unmeasured, first.
        say("warming the broker up: one unmeasured read of the topic")
        await measure_bare_consumer(base, servers, count, args.timeout)
        code_seen: dict[str, str] = {"start": source_digest()}
        for round_no in range(1, args.rounds + 1):
            # Each round runs every stage again, so that each ratio is taken between measurements
            # minutes apart at most; the state check compares the last round's states.
            if settings_of:
                await cleanup_redis(base, [s.redis.key_prefix for s in settings_of.values()])
                settings_of = {}
            measured: dict[str, Measurement] = {}
            mark = f"round {round_no}/{args.rounds}: " if args.rounds > 1 else ""
            for stage in stages:
                say(f"{mark}({stage}) {TITLES[stage]} ...")
                code_seen[f"{stage}{round_no}"] = source_digest()
                if stage == "a":
                    measured[stage] = await measure_bare_consumer(base, servers, count, args.timeout)
                elif stage in ("b", "b2"):
                    measured[stage] = await measure_faust_noop(stage, servers, topic, count, args.timeout)
                elif stage in ("c", "d"):
                    measured[stage], settings_of[stage] = await measure_workers(
                        stage, servers, topic, count, 1 if stage == "c" else 2, args.timeout
                    )
                else:
                    measured[stage], settings_of[stage] = await measure_replay(
                        servers, topic, count, args.timeout, stage=stage
                    )
                m = measured[stage]
                notes = f"; {m.notes}" if m.notes else ""
                say(f"{mark}({stage}) {'done' if m.ok else 'FAILED'}: {fmt(m.rate)} events/s{notes}")
            rounds.append(measured)

        profile_text = ""
        for target in ("replay", "worker"):
            if args.profile not in (target, "both"):
                continue
            profile_path = servers.logs / f"{target}.prof"
            say(f"profiling another {target} run under cProfile -> {profile_path}")
            if target == "replay":
                profiled, _ = await measure_replay(servers, topic, count, args.timeout * 3, profile=profile_path)
            else:
                # cProfile writes its file when the worker exits on SIGTERM (faust exits through SystemExit).
                profiled, _ = await measure_workers(
                    "c", servers, topic, count, 1, args.timeout * 3, profile=profile_path
                )
            if profile_path.exists():
                text = print_profile(profile_path, args.profile_lines)
                (servers.logs / f"{target}-profile.txt").write_text(text)
                profile_text += f"\n{target} under cProfile ({fmt(profiled.rate)} events/s while profiled):\n{text}"
            else:
                say(f"no profile written for the {target}")

        code_seen["end"] = source_digest()
        code_changed = len(set(code_seen.values())) > 1
        if code_changed:
            say(f"WARNING: the code under test changed during the run: {code_seen}")
        verdict: dict[str, Any] = {"compared": [], "pass": None, "problems": []}
        compared = [s for s in ("c", "d", "e", "f", "g") if s in settings_of and measured[s].ok]
        if len(compared) >= 2:
            redis = Redis.from_url(base.redis.url)
            try:
                states = {s: await kpi_state(redis, settings_of[s].redis.key_prefix) for s in compared}
            finally:
                await redis.aclose()
            ok, problems, state_notes = compare_states(states, base)
            if code_changed:
                problems.insert(0, f"the code under test changed during the run ({code_seen}): inconclusive")
            first = states[compared[0]]
            company_months = sorted(k for k in first if k.startswith("kpi:month:") and k.endswith(":c"))
            verdict = {
                "compared": compared,
                "pass": ok,
                "problems": problems,
                "keys": len(first),
                "company_month_hashes": len(company_months),
                "stats": first.get("stats"),
                "code_changed": code_changed,
                "notes": state_notes,
            }
        elif len([s for s in ("c", "d", "e", "f", "g") if s in stages]) >= 2:
            verdict["problems"] = ["fewer than two of (c) to (g) finished: nothing to compare"]
            verdict["pass"] = False

        if servers.external["redis"]:
            await cleanup_redis(base, [s.redis.key_prefix for s in settings_of.values()])

    measured = rounds[-1]
    by_round = [rate_ratios(one) for one in rounds]
    cost_by_round = [cost_ratios_of(one) for one in rounds]
    ratios = median_ratios(by_round)
    cost_ratios = median_ratios(cost_by_round)
    record = {
        "run_id": run_id,
        "cpu_us_per_event": {stage: m.cpu_us_per_event for stage, m in measured.items()},
        "redis_us_per_event": {stage: m.redis_us_per_event for stage, m in measured.items()},
        "cpu_cost_ratios": cost_ratios,
        "parameters": {
            "events": args.events,
            "partitions": args.partitions,
            "faults": args.faults,
            "seed": args.seed,
            "managers": produced["managers"],
            "stages": stages,
            "rounds": args.rounds,
            "worker_batch_size": base.worker.batch_size,
            "worker_batch_within_s": base.worker.batch_within_s,
            "external_servers": servers.external,
        },
        "produced": produced,
        "measurements": {stage: asdict(m) for stage, m in measured.items()},
        "ratios": ratios,
        "ratios_by_round": by_round,
        "cpu_cost_ratios_by_round": cost_by_round,
        "earlier_rounds": [{stage: asdict(m) for stage, m in one.items()} for one in rounds[:-1]],
        "state_check": verdict,
        "source_digest": code_seen,
        "logs": str(servers.logs),
    }
    path = append_result(NAME, record)
    print_summary(args, produced, measured, ratios, cost_ratios, verdict, path, by_round)
    if profile_text:
        print(profile_text)
    failed = [m for m in measured.values() if not m.ok]
    return 1 if failed or verdict.get("pass") is False else 0


def rate_ratios(measured: dict[str, Measurement]) -> dict[str, float | None]:
    rates = {stage: m.rate for stage, m in measured.items()}
    return {key: ratio(rates.get(key.split("/")[0]), rates.get(key.split("/")[1])) for key in RATIO_LABELS}


def cost_ratios_of(measured: dict[str, Measurement]) -> dict[str, float | None]:
    """Cost ratios are inverted (baseline / measured) so that, like the rate ratios, below 1 means slower."""
    cost = {stage: m.cpu_us_per_event for stage, m in measured.items()}
    return {
        key: ratio(cost.get(key.split("/")[1]), cost.get(key.split("/")[0]))
        for key in ("c/b", "c/b2", "c/a", "e/a", "e/c", "f/a", "g/a")
    }


def median_ratios(by_round: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Each ratio's median over the rounds that have it."""
    keys = dict.fromkeys(key for one in by_round for key in one)
    medians: dict[str, float | None] = {}
    for key in keys:
        values = [value for one in by_round if (value := one.get(key)) is not None]
        medians[key] = statistics.median(values) if values else None
    return medians


async def cleanup_redis(settings: Settings, prefixes: list[str]) -> None:
    redis = Redis.from_url(settings.redis.url)
    try:
        for prefix in prefixes:
            batch = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=5000)]
            for start in range(0, len(batch), 5000):
                await redis.unlink(*batch[start : start + 5000])
    finally:
        await redis.aclose()


def print_summary(
    args: argparse.Namespace,
    produced: dict[str, Any],
    measured: dict[str, Measurement],
    ratios: dict[str, float | None],
    cost_ratios: dict[str, float | None],
    verdict: dict[str, Any],
    path: Path,
    by_round: list[dict[str, float | None]],
) -> None:
    kind = "with faults " + json.dumps(produced["fault_rates"]) if args.faults else "valid only"
    print(
        f"\nworker throughput: {produced['records']:,} events ({kind}), {args.partitions} partitions "
        f"{produced['per_partition']}, {produced['managers']} managers"
    )
    print("(machine: 2 cores shared by the broker, Redis and every process measured; compare ratios, not rates)\n")
    print(
        f"  {'stage':<40} {'events/s':>10} {'window s':>9} {'wall s':>7} {'cpu us/ev':>9} {'redis us/ev':>11}"
        "  cpu s in window"
    )
    for stage, m in measured.items():
        cpu = " ".join(f"{name}={fmt(v, '.1f')}" for name, v in m.cpu_s.items())
        title = f"({stage}) {m.title}"
        status = "" if m.ok else "  FAILED"
        print(
            f"  {title:<40} {fmt(m.rate):>10} {fmt(m.seconds, '.2f'):>9} {fmt(m.wall_s, '.1f'):>7} "
            f"{fmt(m.cpu_us_per_event):>9} {fmt(m.redis_us_per_event):>11}  {cpu}{status}"
        )
        for note in m.notes:
            print(f"      note: {note.splitlines()[0]}")
        others = m.cpu_s.get("others")
        if others is not None and m.seconds and others > 0.25 * m.seconds * CORES:
            print(f"      noisy: other processes used {others / m.seconds:.1f} of the {CORES} cores meanwhile")
        if m.extra.get("commits"):
            print(f"      {m.extra['commits']:,} state commits, {m.extra['mean_batch']} events per batch on average")
        if m.extra.get("conflicts"):
            print(f"      commit conflicts retried: {m.extra['conflicts']}")
    labels = RATIO_LABELS
    if len(by_round) > 1:
        print(f"\n  ratios (median of {len(by_round)} rounds; the table above is the last round's):")
    else:
        print("\n  ratios:")
    for key, label in labels.items():
        if ratios.get(key) is not None:
            each = ""
            if len(by_round) > 1:
                each = "   rounds: " + " ".join(fmt(one.get(key), ".3f") for one in by_round)
            print(f"    ({key.replace('/', ')/(')}) {label:<36} {ratios[key]:.3f}{each}")
    shown = {k: v for k, v in cost_ratios.items() if v is not None}
    if shown:
        print("  the same by CPU cost per event (baseline cost / measured cost; steadier when the machine is busy):")
        for key, value in shown.items():
            print(f"    ({key.replace('/', ')/(')}) {labels[key]:<36} {value:.3f}")
    if verdict.get("compared"):
        states = ", ".join(f"({s})" for s in verdict["compared"])
        word = "PASS" if verdict["pass"] else "FAIL"
        print(
            f"\n  STATE CHECK {word}: {states} end with "
            + ("identical" if verdict["pass"] else "DIFFERENT")
            + f" KPI state ({verdict['keys']:,} keys, {verdict['company_month_hashes']} company month hashes); "
            f"stats {verdict['stats']}"
        )
        for problem in verdict["problems"]:
            print(f"    {problem}")
        for note in verdict.get("notes", []):
            print(f"    note: {note}")
    elif verdict.get("problems"):
        print(f"\n  STATE CHECK FAIL: {verdict['problems'][0]}")
    if verdict.get("code_changed"):
        print("  WARNING: the code under test (services/, streams/, dashboard_api/) changed during this run")
    print(f"\n  results appended to {path}")


RATIO_LABELS = {
    "c/b": "worker / faust no-op",
    "c/b2": "worker / faust no-op take_events",
    "c/a": "worker / bare consumer",
    "d/c": "2 workers / 1 worker",
    "e/a": "replay / bare consumer",
    "b/a": "faust no-op / bare consumer",
    "b2/a": "faust take_events / bare consumer",
    "e/c": "replay / worker",
    "f/a": "import onto empty state / bare",
    "g/a": "import onto events / bare",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.worker_throughput",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(
            "Servers: the bench's own Kafka (127.0.0.1:22092) and Redis (:22379) in .local/bench, started and "
            "stopped by the run, unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL name others. Child logs go to "
            ".local/bench/logs/<run id>/. Results: bench/results/worker_throughput.jsonl. See bench/README.md."
        ),
    )
    parser.add_argument(
        "--events", type=int, default=50_000, help="records to produce (default 50000: about 2.5 min in all)"
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the fresh topic (default 4)")
    parser.add_argument(
        "--faults",
        action="store_true",
        help="mix in duplicates 2%%, late deliveries 5%%, malformed 2%% (default: valid events only)",
    )
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    parser.add_argument(
        "--managers",
        type=int,
        default=None,
        help="simulated managers (default 12, the simulator's, or more for over 108k events); calls are keyed "
        "by manager, so few managers spread unevenly over the partitions",
    )
    parser.add_argument(
        "--only",
        type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
        default=list(STAGES),
        help="comma-separated stages to run, of a,b,b2,c,d,e,f,g (default: all)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the stages this many times over, in turn, and report each ratio's median over the rounds "
        "(on a noisy machine a single round's ratios swing; default 1)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each stage may take (default 120)")
    parser.add_argument(
        "--profile",
        choices=("replay", "worker", "both"),
        default=None,
        help="afterwards, run the replay and/or one worker again under cProfile and print the top functions",
    )
    parser.add_argument("--profile-lines", type=int, default=25, help="functions listed per profile sort (default 25)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [s for s in args.only if s not in STAGES]
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {','.join(STAGES)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.events < 1000:
        parser.error("--events must be at least 1000")
    if "a" in args.only and args.events <= 2 * BARE_BATCH:
        parser.error(
            f"(a) needs more than {2 * BARE_BATCH:,} events: it times the records after its first batch "
            f"of up to {BARE_BATCH:,}"
        )
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a fresh broker's first group join warns
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
