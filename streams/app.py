"""The faust app of the stream worker: crm.events in batches -> KPI state in Redis.

faust delivers the records (consumer group, partition assignment, batching with
``take_events``); the state lives in Redis, written once per batch by
:class:`streams.processor.BatchProcessor` together with the partition offsets. faust's own
offset commits do not decide anything: on every partition assignment the worker seeks to
the offset the state holds (so a Redis restored from an older copy is caught up from the
log), and records the state already holds are skipped (so nothing is applied twice).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
from faust.types import TP
from redis.asyncio import Redis

from services.membership import Membership
from services.settings import Settings
from services.topics import RedisKeys
from streams.dead_letters import dead_letter_headers, dead_letter_key
from streams.offload import BatchOffload, BatchProcessFailed
from streams.processor import BatchProcessor, DeadLetter, RawRecord, apply_until_done
from streams.store import StateStore
from streams.sweeper import RetentionSweeper
from streams.updates_relay import UpdatesRelay
from streams.worker_metrics import WorkerMetrics

log = logging.getLogger(__name__)

EXIT_BATCH_FAILED = 70
"""Exit status of a worker that stopped because a batch could not be applied (EX_SOFTWARE)."""

REWIND_EVERY_S = 1.0
"""Seek a partition back at most this often (records already in faust's queues come first)."""
STALL_CHECK_S = 5.0
"""How often the worker checks that the state keeps up with what it has read."""

COMMIT_TIMEOUT_S = 60.0
"""A large batch commit (one Lua script) may take seconds while Redis rewrites its AOF."""


class WorkerRuntime:
    """What the agent needs at run time, opened lazily inside the worker's event loop."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._store: StateStore | None = None
        self._processor: BatchProcessor | None = None
        self.offload: BatchOffload | None = None
        self.busy = False
        """A batch is being applied in this process."""

    @property
    def store(self) -> StateStore:
        """The state in Redis: offsets for seeks, and the client of the relay and the sweeper."""
        if self._store is None:
            redis = Redis.from_url(self.settings.redis.url, health_check_interval=10, socket_timeout=COMMIT_TIMEOUT_S)
            self._store = StateStore(
                redis,
                RedisKeys.from_settings(self.settings),
                claim_ttl_s=(self.settings.business.history_retention_days + 2) * 86_400,
            )
        return self._store

    @property
    def processor(self) -> BatchProcessor:
        """Applies batches in this process (only when there is no batch process)."""
        if self._processor is None:
            self._processor = BatchProcessor(self.settings, self.store, self.send_dead_letters)
        return self._processor

    def forget(self) -> None:
        if self._processor is not None:
            self._processor.forget()

    async def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        producer = self.app.producer
        futures = []
        for letter in letters:
            record = letter.record
            futures.append(
                await producer.send(
                    self.settings.kafka.dlq_topic,
                    key=dead_letter_key(letter),
                    value=record.value,
                    partition=None,
                    timestamp=None,
                    headers=dead_letter_headers(letter),
                )
            )
        for future in futures:
            await future
        log.info("sent %d rejected records to %s", len(letters), self.settings.kafka.dlq_topic)

    def lag(self, last: dict[Any, int]) -> dict[str, int]:
        """``topic:partition`` -> records behind the high watermark, from the last offset taken per partition."""
        behind: dict[str, int] = {}
        for tp, offset in last.items():
            try:
                highwater = self.app.consumer.highwater(tp)
            except Exception:
                continue
            if highwater is not None:
                behind[f"{tp.topic}:{tp.partition}"] = max(0, int(highwater) - offset - 1)
        return behind


def faust_datadir() -> Path:
    """Where faust keeps its small per-app directories."""
    datadir = Path(tempfile.gettempdir()) / "crm-pulse-faust"
    datadir.mkdir(parents=True, exist_ok=True)
    return datadir


def faust_options(settings: Settings, instance_id: str | None = None) -> dict[str, Any]:
    """The faust options of the stream worker (the no-op bench agent uses the same ones), as the static
    group member ``instance_id`` if one is given (see services/membership.py)."""
    datadir = faust_datadir()
    return {
        "broker": [f"kafka://{server}" for server in settings.kafka.bootstrap_servers.split(",")],
        "store": "memory://",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "topic_partitions": settings.kafka.partitions,
        "consumer_auto_offset_reset": "earliest",
        "web_port": settings.worker.web_port,
        "web_host": "127.0.0.1",
        "web_enabled": False,
        "producer_acks": -1,
        "stream_wait_empty": False,
        "broker_commit_every": 10_000,
        "broker_commit_interval": 2.0,
        # Static membership: a restarted worker slot rejoins as the member it replaces and gets its
        # partitions back at once (issue 19); one gone for good loses them after the session timeout.
        "consumer_group_instance_id": instance_id,
        "broker_session_timeout": settings.membership.session_timeout_s,
        "broker_heartbeat_interval": settings.membership.heartbeat_s,
        # faust keeps a small directory per app id; keep it out of the working directory.
        "datadir": str(datadir / "{conf.id}"),
    }


def create_app(settings: Settings) -> faust.App:
    """The worker's faust app for these settings."""
    # Held for the process's life: the slot is this worker's static member id (issue 19).
    membership = Membership(settings, settings.kafka.consumer_group, configured=settings.worker.instance_id)
    app = faust.App(settings.kafka.consumer_group, **faust_options(settings, membership.instance_id))
    # The topics are created beforehand by services.kafka.ensure_product_topics (faust does not
    # declare source topics; auto-creation would give them the broker's defaults).
    events = app.topic(settings.kafka.events_topic, partitions=settings.kafka.partitions)
    runtime = WorkerRuntime(app, settings)
    app.crm_runtime = runtime  # type: ignore[attr-defined]
    app.crm_membership = membership  # type: ignore[attr-defined]

    floors: dict[str, int] = {}

    last_seek: dict[str, float] = {}

    async def rewind(targets: dict[str, int]) -> None:
        # The state is behind what this worker read (Redis came back from an older copy, or records
        # were fetched before the seek on assignment): read those partitions again from the state's
        # offsets (faust drops records below its read offset; seek_wait lowers that too).
        now = time.monotonic()
        positions: dict[Any, int] = {}
        for name, offset in targets.items():
            if now - last_seek.get(name, -REWIND_EVERY_S) < REWIND_EVERY_S:
                continue  # the records of a seek just made are on their way
            last_seek[name] = now
            topic, partition = name.rsplit(":", 1)
            positions[TP(topic, int(partition))] = offset
        if positions:
            log.warning("the state needs these offsets next; reading again from there: %s", targets)
            # seek_wait runs in faust's consumer thread and lowers its read offsets too.
            await app.consumer.seek_wait(positions)

    offload = (
        BatchOffload(settings, rewind, depth=settings.worker.batches_in_flight)
        if settings.worker.batch_process
        else None
    )
    runtime.offload = offload
    worker_metrics = WorkerMetrics()
    app.crm_metrics = worker_metrics  # type: ignore[attr-defined]

    @app.task  # type: ignore[untyped-decorator]
    async def serve_metrics() -> None:
        worker_metrics.serve(settings)

    @app.agent(events, concurrency=1)
    async def apply_events(stream: Any) -> None:
        async for batch in stream.take_events(settings.worker.batch_size, within=settings.worker.batch_within_s):
            # Plain tuples (RawRecord's fields, in order): the batch process takes them as they are.
            rows = []
            last: dict[Any, int] = {}
            for event in batch:
                message = event.message
                rows.append(
                    (
                        message.topic,
                        message.partition,
                        message.offset,
                        int(message.timestamp * 1000),
                        message.key,
                        message.value if message.value is not None else b"",
                    )
                )
                last[message.tp] = message.offset
            worker_metrics.observe_batch(len(rows))
            try:
                if offload is not None:
                    await offload.submit(rows, runtime.lag(last), floors)
                    continue
                runtime.busy = True
                records = [RawRecord(*row) for row in rows]
                try:
                    result = await apply_until_done(runtime.processor, records, runtime.lag(last), floors)
                finally:
                    runtime.busy = False
                if result.rewind:
                    await rewind(result.rewind)
            except Exception:
                # faust would restart the agent past this batch: its records would be skipped. Stop the
                # whole worker instead; restarted, it resumes from the offsets the state holds.
                log.critical("applying a batch failed; the worker stops (restart it to resume)", exc_info=True)
                os._exit(EXIT_BATCH_FAILED)
            log.debug(
                "batch: %d accepted, %d duplicates, %d rejected, %d already applied",
                result.accepted,
                result.duplicates,
                result.rejected,
                result.skipped,
            )

    @app.task  # type: ignore[untyped-decorator]
    async def relay_updates() -> None:
        if offload is not None:
            return  # the batch process relays the change feed
        redis = runtime.store.redis

        async def send(records: Sequence[tuple[bytes, bytes]]) -> None:
            futures = [
                await app.producer.send(
                    settings.kafka.updates_topic, key=key, value=value, partition=None, timestamp=None, headers=None
                )
                for key, value in records
            ]
            for future in futures:
                await future

        await UpdatesRelay(redis, RedisKeys.from_settings(settings), send).run()

    sweeper: list[RetentionSweeper] = []

    @app.timer(interval=settings.retention.sweep_interval_s)  # type: ignore[untyped-decorator]
    async def sweep_expired_state() -> None:
        # Every worker ticks; the sweeper lock lets one at a time do the work.
        if not sweeper:
            sweeper.append(RetentionSweeper.from_settings(runtime.store.redis, settings))
        try:
            await sweeper[0].sweep()
        except Exception:  # retried at the next tick; a failed sweep must not stop the worker
            log.exception("retention sweep failed")

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def resume_from_state(sender: Any, assigned: set[Any], **_: Any) -> None:
        # Start each events partition where the state says it stopped, not where faust committed.
        runtime.forget()
        if offload is not None:
            # Let the batch process apply what it holds first, so the stored offsets are current.
            await offload.forget()
            try:
                await offload.sync()
            except BatchProcessFailed:
                log.critical("the batch process failed; the worker stops (restart it to resume)", exc_info=True)
                os._exit(EXIT_BATCH_FAILED)
        ours = [tp for tp in assigned if tp.topic == settings.kafka.events_topic]
        stored = await runtime.store.offsets(f"{tp.topic}:{tp.partition}" for tp in ours)
        # Where retention removed records the state never applied, the log's start is the floor:
        # the gap up to it is not a reason to read again.
        earliest = await app.consumer.earliest_offsets(*ours) if ours else {}
        for tp in ours:
            name = f"{tp.topic}:{tp.partition}"
            position, first = stored[name], earliest.get(tp)
            if position is not None and first is not None and first > position:
                log.warning(
                    "%s: records %d..%d are gone from the log (retention); continuing", name, position, first - 1
                )
                floors[name] = first
        positions = {tp: stored[f"{tp.topic}:{tp.partition}"] or 0 for tp in ours}
        if positions:
            # Records fetched from faust's committed offsets before this seek still arrive first; the
            # batches hold them back (they are past the state's offsets) and these come again.
            now = time.monotonic()
            last_seek.update((f"{tp.topic}:{tp.partition}", now) for tp in ours)
            await app.consumer.seek_wait(positions)
            log.info("resuming %d partitions from the stored state offsets", len(positions))

    stall: dict[str, int] = {}

    @app.timer(interval=STALL_CHECK_S)  # type: ignore[untyped-decorator]
    async def check_state_keeps_up() -> None:
        # A seek can lose the race with records faust had already fetched: faust then drops the
        # records read again as "already read", and nothing more arrives to show the gap. So, when
        # idle, compare what faust has read with the state's offsets; behind twice running = seek.
        if runtime.busy or (offload is not None and not offload.idle):
            return
        read_offsets = getattr(app.consumer, "_read_offset", {})
        ours = [tp for tp in app.consumer.assignment() if tp.topic == settings.kafka.events_topic]
        try:
            stored = await runtime.store.offsets(f"{tp.topic}:{tp.partition}" for tp in ours)
        except Exception:  # Redis away: the batch path waits for it; check again later
            return
        behind: dict[str, int] = {}
        for tp in ours:
            name = f"{tp.topic}:{tp.partition}"
            position, read = stored.get(name), read_offsets.get(tp)
            if position is not None and read is not None and position <= read:
                if stall.get(name) == position:
                    behind[name] = position
                stall[name] = position
            else:
                stall.pop(name, None)
        if behind:
            await rewind(behind)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_batch_process(sender: Any, **_: Any) -> None:
        if offload is not None:
            await offload.stop()

    return app
