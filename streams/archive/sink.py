"""The archive sink: accepted events from ``crm.events`` into PostgreSQL, exactly once in effect.

Its own consumer group reads the events topic. Each batch is one database transaction that
locks the batch's partitions' rows in ``sink_offsets``, skips records below them (applied
before), validates the rest like the worker (``services.schemas.events``: schema, stage,
currency, then the time checks against the record's timestamp and the archive's watermark),
drops duplicates by ``event_id`` (against the table and within the batch), writes the accepted
events, rebuilds the touched deals' state and history, and moves the offsets: a kill at any
moment leaves either all of a batch or none of it. Rejects are the worker's job (it sends them to
the dead-letter topic); the sink only counts them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from services import kafka
from services.archive.database import connect
from services.archive.deal_state import DEAL_TYPES, DealEventRow, deal_state
from services.group_leave import leave_quietly
from services.membership import Membership
from services.schemas.events import (
    CrmEvent,
    EventRejected,
    Rejection,
    ValidationPolicy,
    check_time,
    validate_values,
)
from services.settings import Settings

log = logging.getLogger(__name__)

EVENT_COLUMNS = (
    "event_id",
    "type",
    "occurred_at",
    "utc_offset_s",
    "manager_id",
    "team_id",
    "deal_id",
    "customer_id",
    "amount",
    "currency",
    "stage",
    "lead_source",
    "lost_reason",
    "duration_s",
    "outcome",
    "kafka_partition",
    "kafka_offset",
)
HISTORY_COLUMNS = (
    "deal_id",
    "seq",
    "event_id",
    "type",
    "occurred_at",
    "stage",
    "amount",
    "status",
    "stage_changed",
    "amount_changed",
)
DEAL_COLUMNS = (
    "deal_id",
    "created_event_id",
    "created_at",
    "customer_id",
    "lead_source",
    "status",
    "stage",
    "amount",
    "manager_id",
    "team_id",
    "last_event_at",
    "events",
)
NO_POSITION = -1
"""The offset row of a partition the sink has not written yet: any first record is taken."""
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """A record of the events topic, as the sink needs it."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes


@dataclass
class BatchOutcome:
    """What one batch did."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    deals: int = 0
    rewind: dict[int, int] = field(default_factory=dict)
    """partition -> the offset to read again from (records were missed before this batch's first)."""


def _event_row(event: CrmEvent, record: SinkRecord) -> tuple[Any, ...]:
    fields = event.__dict__
    offset = event.occurred_at.utcoffset()
    return (
        event.event_id,
        str(event.type),
        event.occurred_at,
        int(offset.total_seconds()) if offset is not None else 0,
        event.manager_id,
        event.team_id,
        fields.get("deal_id"),
        fields.get("customer_id"),
        fields.get("amount"),
        event.currency,
        fields.get("stage"),
        fields.get("lead_source"),
        fields.get("lost_reason"),
        fields.get("duration_s"),
        fields.get("outcome"),
        record.partition,
        record.offset,
    )


def _deal_id(event: CrmEvent) -> str:
    deal_id: str | None = event.__dict__.get("deal_id")
    return deal_id or ""


class ArchiveWriter:
    """Applies batches of records of one topic to the archive, one transaction each."""

    def __init__(
        self, settings: Settings, connection: psycopg.AsyncConnection[Any], reader: psycopg.AsyncConnection[Any]
    ) -> None:
        self.topic = settings.kafka.events_topic
        self.policy = ValidationPolicy.from_settings(settings.business)
        self.connection = connection
        self.reader = reader
        """An autocommit connection for reads outside the batches (a rebalance may ask during one)."""

    async def positions(self, partitions: Iterable[int]) -> dict[int, int]:
        """The next offset to read per partition, for those the archive holds (committed ones)."""
        async with self.reader.cursor() as cursor:
            await cursor.execute(
                "SELECT partition, next_offset FROM sink_offsets WHERE topic = %s AND partition = ANY(%s)",
                (self.topic, list(partitions)),
            )
            return {partition: offset for partition, offset in await cursor.fetchall() if offset != NO_POSITION}

    async def apply(self, records: Sequence[SinkRecord]) -> BatchOutcome:
        """Apply one batch (records of any partitions, in offset order per partition) atomically."""
        outcome = BatchOutcome()
        partitions = sorted({record.partition for record in records})
        async with self.connection.transaction(), self.connection.cursor() as cursor:
            await cursor.execute(
                "INSERT INTO sink_offsets (topic, partition, next_offset) SELECT %s, p, %s FROM unnest(%s::int[]) p "
                "ON CONFLICT DO NOTHING",
                (self.topic, NO_POSITION, partitions),
            )
            # The lock fences a second sink that was given the same partitions in a rebalance: it waits, then
            # finds the offsets moved and skips what this one wrote.
            await cursor.execute(
                "SELECT partition, next_offset FROM sink_offsets WHERE topic = %s AND partition = ANY(%s) "
                "ORDER BY partition FOR UPDATE",
                (self.topic, partitions),
            )
            stored: dict[int, int] = dict(await cursor.fetchall())
            fresh: list[SinkRecord] = []
            next_offsets: dict[int, int] = {}
            for record in records:
                if record.partition in outcome.rewind:
                    continue
                position = next_offsets.get(record.partition, stored[record.partition])
                if position != NO_POSITION and record.offset < position:
                    outcome.skipped += 1
                    continue
                if position != NO_POSITION and record.offset > position:
                    outcome.rewind[record.partition] = position
                    continue
                fresh.append(record)
                next_offsets[record.partition] = record.offset + 1
            if not fresh:
                return outcome
            await cursor.execute("SELECT max(occurred_at) FROM events")
            row = await cursor.fetchone()
            watermark: datetime | None = row[0] if row is not None else None
            parsed = validate_values([record.value for record in fresh], self.policy)
            candidates: list[tuple[SinkRecord, CrmEvent]] = []
            for record, item in zip(fresh, parsed, strict=True):
                if type(item) is Rejection:
                    outcome.rejected += 1
                    continue
                candidates.append((record, item))  # type: ignore[arg-type]
            await cursor.execute(
                "SELECT event_id FROM events WHERE event_id = ANY(%s)", ([event.event_id for _, event in candidates],)
            )
            seen = {event_id for (event_id,) in await cursor.fetchall()}
            accepted: list[tuple[SinkRecord, CrmEvent]] = []
            for record, event in candidates:
                try:
                    now = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
                    check_time(event, self.policy, now=now, watermark=watermark)
                except EventRejected:
                    outcome.rejected += 1
                    continue
                if event.event_id in seen:
                    outcome.duplicates += 1
                    continue
                seen.add(event.event_id)
                accepted.append((record, event))
                if watermark is None or event.occurred_at > watermark:
                    watermark = event.occurred_at
            outcome.accepted = len(accepted)
            if accepted:
                async with cursor.copy(f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
                    for record, event in accepted:
                        await copy.write_row(_event_row(event, record))
                touched = sorted(
                    {deal_id for _, event in accepted if str(event.type) in DEAL_TYPES and (deal_id := _deal_id(event))}
                )
                outcome.deals = len(touched)
                if touched:
                    await self._rebuild_deals(cursor, touched)
            await cursor.execute(
                "UPDATE sink_offsets SET next_offset = o.next_offset FROM unnest(%s::int[], %s::bigint[]) "
                "AS o(partition, next_offset) WHERE sink_offsets.topic = %s AND sink_offsets.partition = o.partition",
                (list(next_offsets), list(next_offsets.values()), self.topic),
            )
            counts = {
                "accepted": outcome.accepted,
                "duplicates": outcome.duplicates,
                "rejected": outcome.rejected,
            }
            await cursor.execute(
                "INSERT INTO sink_counts (name, value) SELECT * FROM unnest(%s::text[], %s::bigint[]) "
                "ON CONFLICT (name) DO UPDATE SET value = sink_counts.value + excluded.value",
                (list(counts), list(counts.values())),
            )
        return outcome

    @staticmethod
    async def _rebuild_deals(cursor: psycopg.AsyncCursor[Any], deal_ids: list[str]) -> None:
        """Recompute the current state and the history of these deals from all their archived events."""
        await cursor.execute(
            "SELECT deal_id, event_id, type, occurred_at, manager_id, team_id, customer_id, amount, stage, "
            "lead_source FROM events WHERE deal_id = ANY(%s) AND type = ANY(%s)",
            (deal_ids, list(DEAL_TYPES)),
        )
        by_deal: dict[str, list[DealEventRow]] = defaultdict(list)
        for deal_id, *values in await cursor.fetchall():
            by_deal[deal_id].append(DealEventRow(*values))
        await cursor.execute("DELETE FROM deal_history WHERE deal_id = ANY(%s)", (deal_ids,))
        await cursor.execute("DELETE FROM deals WHERE deal_id = ANY(%s)", (deal_ids,))
        states = [deal_state(deal_id, events) for deal_id, events in by_deal.items()]
        async with cursor.copy(f"COPY deal_history ({', '.join(HISTORY_COLUMNS)}) FROM STDIN") as copy:
            for _, history in states:
                for entry in history:
                    await copy.write_row(
                        (
                            entry.deal_id,
                            entry.seq,
                            entry.event_id,
                            entry.type,
                            entry.occurred_at,
                            entry.stage,
                            entry.amount,
                            entry.status,
                            entry.stage_changed,
                            entry.amount_changed,
                        )
                    )
        async with cursor.copy(f"COPY deals ({', '.join(DEAL_COLUMNS)}) FROM STDIN") as copy:
            for state, _ in states:
                await copy.write_row(
                    (
                        state.deal_id,
                        state.created_event_id,
                        state.created_at,
                        state.customer_id,
                        state.lead_source,
                        state.status,
                        state.stage,
                        state.amount,
                        state.manager_id,
                        state.team_id,
                        state.last_event_at,
                        state.events,
                    )
                )


class _SeekToArchive(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, each partition resumes from the offset the archive holds (the group's are ignored)."""

    def __init__(self, sink: ArchiveSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.sink.seek_assigned(assigned)


class ArchiveSink:
    """The sink process's loop: fetch a batch, apply it, repeat; until stopped (or the log's end)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.kafka.events_topic
        self.consumer: AIOKafkaConsumer | None = None
        self.writer: ArchiveWriter | None = None
        self.totals = BatchOutcome()

    async def seek_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assert self.consumer is not None and self.writer is not None
        mine = [tp for tp in assigned if tp.topic == self.topic]
        positions = await self.writer.positions([tp.partition for tp in mine])
        for tp in mine:
            if tp.partition in positions:
                self.consumer.seek(tp, positions[tp.partition])
            else:
                await self.consumer.seek_to_beginning(tp)

    async def run(self, stop: asyncio.Event, *, until_end: bool = False, progress: Any = None) -> BatchOutcome:
        """Consume and archive until ``stop`` is set (or, with ``until_end``, the log's end as of the start)."""
        settings = self.settings
        await kafka.ensure_topics(settings, [self.topic], settings.kafka.partitions)
        connection = await connect(settings.database.url)
        reader = await connect(settings.database.url, autocommit=True)
        self.writer = ArchiveWriter(settings, connection, reader)
        group = settings.database.archive_group
        membership = Membership(settings, group)  # a restart in this slot takes the partitions back at once
        consumer = kafka.consumer(
            settings,
            group_id=group,
            **membership.consumer_options(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            client_id="crm-pulse-archive",
        )
        self.consumer = consumer
        consumer.subscribe([self.topic], listener=_SeekToArchive(self))
        await consumer.start()
        ends: dict[int, int] | None = None
        try:
            if until_end:
                tps = [TopicPartition(self.topic, p) for p in await kafka.partition_ids(settings, self.topic)]
                ends = {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
            batch_ms = int(settings.database.batch_within_s * 1000)
            while not stop.is_set():
                if ends is not None and await self._caught_up(ends):
                    break
                fetched = await consumer.getmany(timeout_ms=batch_ms, max_records=settings.database.batch_size)
                records = [
                    SinkRecord(tp.partition, message.offset, message.timestamp, message.value or b"")
                    for tp, messages in fetched.items()
                    for message in messages
                ]
                if not records:
                    continue
                outcome = await self._apply_retrying(records, stop)
                if outcome is None:
                    break
                for partition, offset in outcome.rewind.items():
                    consumer.seek(TopicPartition(self.topic, partition), offset)
                self._add(outcome)
                if progress is not None:
                    progress.advance(len(records))
                await self._commit_group(records, outcome)
        finally:
            await consumer.stop()
            await leave_quietly(settings.kafka.bootstrap_servers, group, membership.instance_id)
            membership.release()
            await self.writer.connection.close()
            await reader.close()
        return self.totals

    async def _caught_up(self, ends: dict[int, int]) -> bool:
        assert self.writer is not None
        positions = await self.writer.positions(ends)
        return all(positions.get(partition, 0) >= end for partition, end in ends.items() if end > 0)

    async def _apply_retrying(self, records: list[SinkRecord], stop: asyncio.Event) -> BatchOutcome | None:
        """Apply a batch, waiting out database outages (the same batch again); None when stopped meanwhile."""
        assert self.writer is not None
        delay = RETRY_INITIAL_S
        while True:
            try:
                return await self.writer.apply(records)
            except psycopg.errors.UniqueViolation:
                # Another sink wrote one of these event ids between our check and our copy: apply again.
                log.warning("archive batch raced with another sink on an event id; applying it again")
            except psycopg.OperationalError as exc:
                log.warning("archive database unavailable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                if stop.is_set():
                    return None
                try:
                    await self.writer.connection.close()
                    self.writer.connection = await connect(self.settings.database.url)
                except Exception as again:  # still down: keep waiting
                    log.warning("reconnecting to the archive failed: %s", again)

    async def _commit_group(self, records: list[SinkRecord], outcome: BatchOutcome) -> None:
        """Tell the group how far the archive is (for lag monitoring only: the archive's offsets rule)."""
        assert self.consumer is not None
        reached: dict[TopicPartition, int] = {}
        for record in records:
            if record.partition not in outcome.rewind:
                tp = TopicPartition(self.topic, record.partition)
                reached[tp] = max(reached.get(tp, 0), record.offset + 1)
        try:
            await self.consumer.commit(reached)
        except KafkaError as exc:  # a rebalance under way: the next batch commits again
            log.info("group offsets not committed (%s)", exc)

    def _add(self, outcome: BatchOutcome) -> None:
        totals = self.totals
        totals.accepted += outcome.accepted
        totals.duplicates += outcome.duplicates
        totals.rejected += outcome.rejected
        totals.skipped += outcome.skipped
        totals.deals += outcome.deals
