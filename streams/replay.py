"""Rebuild all KPI state from the Kafka log: ``python -m streams.replay`` (or ``crm-pulse replay``).

Kafka is the source of truth; everything in Redis follows from it. Replay reads the events
topic from the beginning with a plain aiokafka consumer in large batches (around faust's
per-message path) and drives the same batch processor as the live worker, so it ends with
the same numbers. The state records the offsets it reached, so a worker started afterwards
carries on from there. Stop the workers first: a running worker would only resume after the
replay finishes anyway (its commits are fenced by the offsets), but it wastes the work.

Quotas are configuration, not events: after wiping, replay restores them from the compacted
quotas topic (read to its end, the last record of each key wins).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import itertools
import logging
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services import kafka
from services.kpis.contributions import to_us
from services.quota_store import restore_quotas
from services.reports.saved import restore_saved_reports
from services.schemas.events import (
    CrmEvent,
    EventRejected,
    Rejection,
    ValidationPolicy,
    check_time,
    validate_values,
)
from services.settings import Settings, load_settings
from services.topics import RedisKeys
from streams.dead_letters import KafkaDeadLetters
from streams.processor import BatchProcessor, RawRecord, gc_paused
from streams.store import BulkStore, CommitConflict, PreviousCommitFailed, SoleWriterStore

log = logging.getLogger(__name__)

DEFAULT_BATCH = 20_000


class ReplayStopped(RuntimeError):
    """The replay cannot go on; the message says why and what to do."""


def not_applied(failed: PreviousCommitFailed) -> ReplayStopped:
    return ReplayStopped(
        f"a commit of the replay did not apply ({failed}): if another process writes the same "
        "state, stop the workers; then run `crm-pulse replay --keep`, which continues from the "
        "last commit applied (an import's records are in the events topic already)"
    )


def unavailable(exc: KafkaError | RedisError, settings: Settings) -> str:
    """Which server failed a bulk command, and how."""
    hint = "local servers start with `crm-pulse infra up`"
    if isinstance(exc, KafkaError):  # (its text names the class already)
        return f"Kafka at {settings.kafka.bootstrap_servers} failed or cannot be reached ({exc}; {hint})"
    return f"Redis at {settings.redis.url} failed or cannot be reached ({type(exc).__name__}: {exc}; {hint})"


async def wipe_state(redis: Redis, keys: RedisKeys) -> int:
    """Delete every key of this deployment's prefix; returns how many."""
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += await redis.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted


class ProgressLine:
    """A one-line progress bar on stderr (rate and ETA), quiet when stderr is not a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._drawn: int | None = None
        self.tty = sys.stderr.isatty()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= (0.2 if self.tty else 5.0) or self.done >= self.total:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        share = min(self.done / self.total, 1.0)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        bar = "#" * int(share * 30)
        line = f"{self.label} [{bar:<30}] {self.done:,}/{self.total:,} {rate:,.0f}/s eta {eta:,.0f}s"
        self._drawn = self.done
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        sys.stderr.flush()

    def close(self) -> None:
        if self._drawn != self.done:  # the last advance drew the end already: once is enough
            self._draw(time.monotonic())
        if self.tty:
            sys.stderr.write("\n")


async def replay(
    settings: Settings,
    *,
    wipe: bool = True,
    batch_size: int = DEFAULT_BATCH,
    show_progress: bool = True,
    read_state: bool = False,
) -> int:
    """Apply the events topic to the state (all of it, or with ``wipe=False`` from the offsets the state
    holds); returns the number of records read.

    Onto a wiped state, or one that holds nothing yet (no offsets: no batch ever applied, as for a
    first history import), the replay is the state's sole writer and reads nothing back (see
    :class:`SoleWriterStore`); ``read_state`` makes it read the state anyway, as it does when the
    state holds events already (see :class:`BulkStore`).
    """
    sole = wipe or (not read_state and await state_is_empty(settings))
    # As sole writer, the buckets the retention will have expired by the end of the replay are never
    # written (a long log would otherwise write every minute, hour and UTC-day bucket of its whole
    # history, for the sweeper to delete). The end's watermark is known only at the end; the latest
    # events of each partition tell it beforehand, and it is checked afterwards.
    floor_us = await peek_watermark(settings) if sole else None
    read, watermark_us = await _replay_once(settings, wipe, sole, batch_size, show_progress, floor_us)
    if floor_us is not None and (watermark_us is None or watermark_us < floor_us):
        # One of the events peeked at was not accepted (a repeated event id): buckets may be missing.
        # The state held nothing but what this replay wrote, so it starts again from a wiped one.
        log.warning("the watermark ended before the latest events peeked at; replaying again without the guess")
        read, _ = await _replay_once(settings, True, True, batch_size, show_progress, None, feed=not wipe)
    return read


async def state_is_empty(settings: Settings) -> bool:
    """Whether the state holds no event: no offsets and no watermark (every commit that writes events,
    claims, deals or buckets writes the offsets of its partitions with them)."""
    keys = RedisKeys.from_settings(settings)
    redis = Redis.from_url(settings.redis.url, socket_timeout=60.0)
    try:
        return not await redis.exists(keys.offsets, keys.watermark)
    finally:
        await redis.aclose()


PEEK_RECORDS = 20
"""Records read from the end of each partition to tell the watermark a replay will end with."""


async def peek_watermark(settings: Settings) -> int | None:
    """A lower bound of the watermark a replay of the events topic will end with (epoch µs), from the
    latest records of each partition: the latest of their occurred_at that pass validation and are
    not in the future. An accepted event moves the watermark up to it, and one rejected as too old
    was already below the watermark; only a repeated event id, which is ignored, can leave the
    watermark below it (so the caller checks at the end)."""
    policy = ValidationPolicy.from_settings(settings.business)
    messages = [m async for m in kafka.records_to_end(settings, settings.kafka.events_topic, last=PEEK_RECORDS)]
    latest: int | None = None
    for message, item in zip(messages, validate_values([m.value or b"" for m in messages], policy), strict=True):
        if type(item) is Rejection:
            continue
        event = cast(CrmEvent, item)
        try:
            check_time(event, policy, now=datetime.fromtimestamp(message.timestamp / 1000, UTC), watermark=None)
        except EventRejected:
            continue
        t_us = to_us(event.occurred_at)
        if latest is None or t_us > latest:
            latest = t_us
    return latest


async def _replay_once(
    settings: Settings,
    wipe: bool,
    sole: bool,
    batch_size: int,
    show_progress: bool,
    floor_us: int | None,
    *,
    feed: bool | None = None,
) -> tuple[int, int | None]:
    """One replay: the records read and, as sole writer, the watermark it ended with. ``feed``: write
    the change feed at the end (by default when not wiping: a replay's wipe writes none)."""
    redis = Redis.from_url(settings.redis.url, socket_timeout=60.0)
    keys = RedisKeys.from_settings(settings)
    claim_ttl_s = (settings.business.history_retention_days + 2) * 86_400
    feed = not wipe if feed is None else feed
    # Onto wiped or empty state the replay is the only writer: it answers its reads itself and overlaps
    # each Redis commit with the next batch. Continuing (--keep) reads the state like a worker does.
    # Both write the change feed once at the end when they continue (see FeedAtEnd).
    # (the commit thread's connection)
    writer = SyncRedis.from_url(settings.redis.url, socket_timeout=60.0)
    store = (
        SoleWriterStore(redis, keys, claim_ttl_s=claim_ttl_s, writer=writer, feed_at_end=feed)
        if sole
        else BulkStore(redis, keys, claim_ttl_s=claim_ttl_s, writer=writer)
    )

    # Rejects are sent to the dead-letter topic again (same key = source position, so consumers
    # drop repeats): records a worker never saw (an import) must not vanish.
    producer = kafka.producer(settings, acks="all")
    processor = BatchProcessor(settings, store, KafkaDeadLetters(producer, settings.kafka.dlq_topic))
    processor.prune_floor_us = floor_us
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        retry_backoff_ms=kafka.OFFSETS_BACKOFF_MS,
    )
    try:
        await producer.start()
        await consumer.start()
        if wipe:
            removed = await wipe_state(redis, keys)
            log.info("removed %d keys of prefix %s", removed, keys.prefix)
        restored = await restore_quotas(settings, redis)
        log.info("restored %d quotas from topic %s", restored, settings.kafka.quotas_topic)
        reports = await restore_saved_reports(settings, redis)
        log.info("restored %d saved reports from topic %s", reports, settings.kafka.reports_topic)
        topic = settings.kafka.events_topic
        tps = [TopicPartition(topic, partition) for partition in await kafka.partition_ids(settings, topic)]
        if not tps:
            log.warning("topic %s has no partitions: nothing to replay", settings.kafka.events_topic)
            return 0, None
        if isinstance(store, SoleWriterStore):
            store.fence([f"{tp.topic}:{tp.partition}" for tp in tps])
        firsts, ends = await kafka.bounds(consumer, tps)
        stored = await store.all_offsets()
        starts = {tp: stored.get(f"{tp.topic}:{tp.partition}", firsts[tp]) for tp in tps}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        remaining = {tp for tp in tps if starts[tp] < ends[tp]}
        total = sum(ends[tp] - starts[tp] for tp in tps)
        log.info("replay: reading %d records from %d partitions", total, len(tps))
        progress = ProgressLine(total, "replay") if show_progress else None
        # The cyclic collector stays off while batches are read and applied: they allocate millions of
        # short-lived objects and a replay's state holds many more, which every collection would walk.
        gc.freeze()
        with gc_paused():
            read = await _apply_log(consumer, processor, remaining, ends, batch_size, progress)
        if progress:
            progress.close()
        try:
            if feed:
                announced = await store.announce(int(time.time() * 1000))
                log.info("change feed: the latest values of %d day, month and current buckets", announced)
            if isinstance(store, SoleWriterStore):
                await store.flush()
                return read, store.watermark_us
        except PreviousCommitFailed as failed:
            raise not_applied(failed) from failed
        return read, None
    finally:
        store.close()
        await consumer.stop()
        await producer.stop()
        await redis.aclose()


class _TimeAlignedBatches:
    """Records read ahead from every partition, handed out in batches that each cover a stretch of
    time across all partitions: the records with the smallest timestamps first, each partition's in
    offset order (so every batch holds a run of consecutive offsets per partition).

    The partitions of a log are read side by side in time. Cut by partition instead (as fetches
    arrive), every batch would span the log's whole time and touch most of its buckets again; cut
    by time, consecutive batches touch mostly different minutes, hours and days, so smaller batches
    cost about as little as one large one, and Redis applies each while the next is computed.
    """

    def __init__(self) -> None:
        self.buffers: dict[int, deque[RawRecord]] = {}
        """Per partition (of the one topic replayed), its records read and not yet taken."""
        self.buffered = 0

    def add(self, partition: int, records: list[RawRecord]) -> None:
        self.buffers.setdefault(partition, deque()).extend(records)
        self.buffered += len(records)

    def waiting_on(self, reading: Iterable[int]) -> bool:
        """Whether a partition still being read has nothing buffered: its next records may be earlier
        than everything buffered."""
        return any(not self.buffers.get(partition) for partition in reading)

    def take(self, size: int, reading: Iterable[int]) -> list[RawRecord]:
        """Up to ``size`` records, earliest timestamps first, and none later than the last record
        buffered from a partition still being read (``reading``) unless that would leave the batch empty."""
        tails = [self.buffers[partition][-1].timestamp_ms for partition in reading if self.buffers.get(partition)]
        horizon = min(tails, default=None)
        by_time = heapq.merge(*self.buffers.values(), key=lambda record: record.timestamp_ms)
        batch = list(itertools.islice(by_time, size))
        if horizon is not None and batch and batch[0].timestamp_ms <= horizon:
            batch = list(itertools.takewhile(lambda record: record.timestamp_ms <= horizon, batch))
        taken = Counter(record.partition for record in batch)
        for partition, buffer in self.buffers.items():
            for _ in range(taken[partition]):
                buffer.popleft()
        self.buffered -= len(batch)
        return batch


async def _apply_log(
    consumer: AIOKafkaConsumer,
    processor: BatchProcessor,
    remaining: set[TopicPartition],
    ends: dict[TopicPartition, int],
    batch_size: int,
    progress: ProgressLine | None,
) -> int:
    """Read the partitions up to their end offsets and apply them in batches; returns the records read."""
    read = 0
    ahead = _TimeAlignedBatches()
    while remaining or ahead.buffered:
        # Read ahead about twice a batch (at most four times), from every partition still being read,
        # so that each batch is cut from every partition's earliest records.
        while remaining and (
            ahead.buffered < 2 * batch_size
            or (ahead.buffered < 4 * batch_size and ahead.waiting_on(tp.partition for tp in remaining))
        ):
            fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=4 * batch_size - ahead.buffered)
            for tp, messages in fetched.items():
                end = ends[tp]
                records = [
                    RawRecord(tp.topic, tp.partition, m.offset, m.timestamp, m.key, m.value or b"")
                    for m in messages
                    if m.offset < end
                ]
                ahead.add(tp.partition, records)
                if messages and messages[-1].offset + 1 >= end:
                    remaining.discard(tp)
        batch = ahead.take(batch_size, [tp.partition for tp in remaining])
        if not batch:
            continue
        try:
            result = await processor.process(batch)
        except PreviousCommitFailed as failed:
            raise not_applied(failed) from failed
        if result.rewind:
            raise ReplayStopped(
                f"the state's offsets moved back during the replay ({result.rewind}): another process "
                "writes the same state; stop the workers and replay again"
            )
        read += len(batch)
        if progress:  # records applied (their commit sent), not merely read ahead
            progress.advance(len(batch))
        # What the batch left alive (the state this store keeps) goes out of the collector's sight, so
        # no collection walks it again. A collection of the young generations here found no cyclic
        # garbage in any replay measured, yet cost 1-1.4 µs per event; a cycle left by some rare path
        # stays until the replay (a one-shot process) ends.
        gc.freeze()
    return read


class _BatchSize(argparse.Action):
    """``--batch-size``: at least 1 (a batch of no records would never end a replay)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any, _: Any = None
    ) -> None:
        if value < 1:
            parser.error("--batch-size must be at least 1")
        setattr(namespace, self.dest, value)


def add_batch_size_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--batch-size`` option of the commands that replay (replay, import)."""
    parser.add_argument(
        "--batch-size",
        type=int,
        action=_BatchSize,
        default=DEFAULT_BATCH,
        help=f"records per state commit (default {DEFAULT_BATCH}); larger batches are faster and take more memory",
    )


async def running_workers(settings: Settings) -> int:
    """Members of the workers' consumer group now: a replay or a bulk catch-up next to running workers
    fights their commits (each is fenced, so it stops part way rather than counting anything twice)."""
    return await kafka.group_members(settings, settings.kafka.consumer_group)


def workers_running(workers: int, settings: Settings) -> str:
    return (
        f"{workers} member(s) of the workers' consumer group {settings.kafka.consumer_group!r} are running: "
        "stop the workers first"
    )


async def _command(settings: Settings, args: argparse.Namespace) -> int:
    if not args.force and (workers := await running_workers(settings)):
        raise ReplayStopped(
            f"{workers_running(workers, settings)} (a replay next to them fights their commits); a worker "
            "killed without stopping stays a member for the broker's session timeout (about a minute): "
            "wait, or pass --force"
        )
    return await replay(settings, wipe=not args.keep, batch_size=args.batch_size, show_progress=not args.quiet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crm-pulse replay",
        description="Rebuild the KPI state in Redis from the Kafka events topic (Kafka is the source of truth).",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="do not wipe the state first: continue from the offsets the state holds",
    )
    add_batch_size_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replay even though the workers' consumer group has members (a worker killed a moment ago "
        "stays a member until the broker's session timeout)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    started = time.monotonic()
    try:
        count = asyncio.run(_command(settings, args))
    except (KafkaError, RedisError) as exc:
        again = "crm-pulse replay --keep" if args.keep else "crm-pulse replay"
        print(
            f"crm-pulse replay: {unavailable(exc, settings)}; run `{again}` again once it is back (a replay "
            "stopped part way leaves the state incomplete)",
            file=sys.stderr,
        )
        return 1
    except CommitConflict as exc:
        print(
            f"crm-pulse replay: another process wrote the state during the replay ({exc}): stop the workers "
            "and replay again",
            file=sys.stderr,
        )
        return 1
    except ReplayStopped as exc:
        print(f"crm-pulse replay: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    print(f"replayed {count:,} records in {elapsed:.1f}s ({count / max(elapsed, 1e-9):,.0f}/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
