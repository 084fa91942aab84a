"""One batch of raw CRM event records in, one atomic state commit out.

Used by the live faust worker and by replay alike. Per batch: skip records at or below the
stored offsets (already applied), validate in contract order, drop duplicates by event_id,
send rejects to the dead-letter sink, compute the contribution deltas of the touched deals
and customers with the pure core, then commit state, offsets, claims and counters at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import NamedTuple, cast

from aiokafka.errors import KafkaError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.kpis.contributions import (
    SLOT_US,
    Calendar,
    Cells,
    DealEvent,
    Win,
    activity_contributions,
    customer_contributions,
    deal_contributions,
    expand_cells,
    from_us,
    subtract_into,
    to_us,
)
from services.kpis.deal_clock import deal_clock, score_s
from services.kpis.retention import RetentionPolicy, deal_end_s
from services.schemas.events import (
    DEAL_EVENT_MODELS,
    CrmEvent,
    DealCreatedEvent,
    EventRejected,
    Rejection,
    ValidationPolicy,
    check_time,
    validate_values,
)
from services.settings import Settings
from services.topics import RedisKeys
from streams.store import Commit, CommitConflict, StateStore, digest

log = logging.getLogger(__name__)

_DEAL_TYPES = frozenset(DEAL_EVENT_MODELS)
"""The deal event models, by exact type: isinstance of a pydantic model goes through ABCMeta, which
costs about 0.2 µs a class when the answer is no (as for the most frequent events)."""
NO_WATERMARK = -(2**62)
"""The watermark of a state that has accepted no event yet, in epoch microseconds."""
_MICROSECOND = timedelta(microseconds=1)

RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0
TRANSIENT = (RedisConnectionError, RedisTimeoutError, KafkaError)
"""Outages worth waiting for (the batch is applied once they end); anything else is a fault."""


class RawRecord(NamedTuple):
    """A record as read from the events topic (a tuple: a row from the worker's pipe becomes one cheaply)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


_TOPIC_PARTITION = itemgetter(0, 1)
"""A RawRecord's (topic, partition)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record on its way to the dead-letter topic, with the reason."""

    record: RawRecord
    rejection: Rejection


DeadLetterSink = Callable[[Sequence[DeadLetter]], Awaitable[None]]


@dataclass
class BatchResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    held: int = 0
    """Records not applied because earlier ones of their partition are missing from the state."""
    rewind: dict[str, int] = field(default_factory=dict)
    """``topic:partition`` -> the offset to read again from (the state's next offset)."""
    change_id: str = ""
    rejected_by_code: dict[str, int] = field(default_factory=dict)


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a batch is processed.

    A batch allocates tens of thousands of objects that live until its end, and none form cycles;
    with the collector on, those allocations trigger collections that walk every live object (the
    deal cache, a replay's state) again and again: measured, a third of the worker's CPU time.
    The collector runs again after the batch; what the batch left behind is freed by reference
    counting meanwhile.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Lru(OrderedDict[str, tuple[list[DealEvent], str]]):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def remember(self, key: str, value: tuple[list[DealEvent], str]) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class BatchProcessor:
    """Applies batches of raw records to the KPI state in Redis, exactly once in effect."""

    MAX_ATTEMPTS = 8

    def __init__(self, settings: Settings, store: StateStore, dead_letters: DeadLetterSink) -> None:
        self.policy = ValidationPolicy.from_settings(settings.business)
        self.calendar = Calendar(settings.business.zone)
        self.retention = RetentionPolicy.from_settings(settings)
        self.store = store
        self.keys: RedisKeys = store.keys
        self.dead_letters = dead_letters
        self.deal_cache = _Lru(settings.worker.deal_cache_size)
        self.prune_floor_us: int | None = None
        """A watermark the state is known to reach (a replay's, see ``streams.replay``): buckets that
        will be expired then are left out already, as if the watermark were there."""

    def forget(self) -> None:
        """Drop cached state (after a rebalance or a conflict): Redis is the truth."""
        self.deal_cache.clear()

    async def process(
        self, records: Sequence[RawRecord], lag: dict[str, int] | None = None, floors: dict[str, int] | None = None
    ) -> BatchResult:
        """Apply a batch; retried from fresh reads when the state moved underneath it.

        ``floors``: per partition, the log's first offset when it is past the state's offset (the
        records before it were deleted by retention), so the gap up to it is not a rewind.
        """
        for attempt in range(1, self.MAX_ATTEMPTS + 1):
            try:
                with gc_paused():
                    return await self._process_once(records, lag or {}, floors or {})
            except CommitConflict as conflict:
                log.warning("batch conflicted with concurrent state (%s); retry %d", conflict, attempt)
                self.forget()
        raise RuntimeError(f"batch of {len(records)} records still conflicting after {self.MAX_ATTEMPTS} attempts")

    async def _process_once(
        self, records: Sequence[RawRecord], lag: dict[str, int], floors: dict[str, int]
    ) -> BatchResult:
        result = BatchResult()
        # Schema checks need no state, so they come first: in the batch process they run while
        # Redis still applies the previous batch's commit. Then one round trip reads the offsets,
        # the watermark and the claims; the time checks and dedupe go in record order below.
        parsed = list(zip(records, validate_values([record.value for record in records], self.policy), strict=True))
        if self.store.prefetches:
            self.store.expect(*self._likely_reads(parsed))
        # (the partitions' names once per batch, not once per record)
        tp_names = {key: f"{key[0]}:{key[1]}" for key in set(map(_TOPIC_PARTITION, records))}
        stored, watermark_us, seen = await self.store.batch_state(
            tp_names.values(),
            [cast(CrmEvent, item).event_id for _, item in parsed if type(item) is not Rejection],
        )
        fresh: list[tuple[RawRecord, CrmEvent | Rejection]] = []
        next_offsets: dict[str, int] = {}
        rewind = result.rewind
        for record, item in parsed:
            tp = tp_names[record[0], record[1]]
            if tp in rewind:
                result.held += 1
                continue
            position = next_offsets.get(tp, stored.get(tp))
            if position is not None and record.offset < position:
                # Applied before, or delivered twice in this batch (a seek after a rebalance re-fetches).
                result.skipped += 1
                continue
            if position is not None and record.offset > position and record.offset > floors.get(tp, -1):
                # Records between the state's offset and this one were never applied: the state was
                # restored from an older copy while this worker read on. Applying this record would
                # lose them; the reader must go back to the state's offset instead.
                rewind[tp] = position
                result.held += 1
                continue
            fresh.append((record, item))
            next_offsets[tp] = record.offset + 1
        if rewind:
            log.debug("held back %d records past the state's offsets %s", result.held, rewind)
        if not fresh:
            return result

        accepted: list[CrmEvent] = []
        times: list[int] = []
        """occurred_at of each accepted event, in epoch microseconds."""
        dead: list[DeadLetter] = []
        stats: dict[str, int] = {}
        produced_ms = 0
        # The time checks in integer microseconds: an event inside both bounds passes check_time,
        # which is asked only about the others (it says why, or lets it pass on the exact instants).
        future_us = self.policy.future_tolerance // _MICROSECOND
        retention_us = self.policy.retention // _MICROSECOND
        reached_us = watermark_us if watermark_us is not None else NO_WATERMARK
        stamped_ms, latest_us = -1, 0
        for record, item in fresh:
            if type(item) is Rejection:
                rejection: Rejection | None = item
            else:  # (exact types, not isinstance: see _DEAL_TYPES)
                event = cast(CrmEvent, item)
                rejection = None
                if record.timestamp_ms != stamped_ms:  # records produced together share it
                    stamped_ms = record.timestamp_ms
                    latest_us = stamped_ms * 1000 + future_us
                t_us = to_us(event.occurred_at)
                if t_us > latest_us or t_us < reached_us - retention_us:
                    try:
                        now = datetime.fromtimestamp(stamped_ms / 1000, UTC)
                        watermark = from_us(reached_us) if reached_us != NO_WATERMARK else None
                        check_time(event, self.policy, now=now, watermark=watermark)
                    except EventRejected as rejected:
                        rejection = rejected.rejection
            if rejection is not None:
                dead.append(DeadLetter(record, rejection))
                code = str(rejection.code)
                result.rejected_by_code[code] = result.rejected_by_code.get(code, 0) + 1
                continue
            if event.event_id in seen:
                result.duplicates += 1
                continue
            seen.add(event.event_id)
            accepted.append(event)
            times.append(t_us)
            if t_us > reached_us:
                reached_us = t_us
            produced_ms = record.timestamp_ms if not produced_ms else min(produced_ms, record.timestamp_ms)
        result.rejected = len(dead)
        result.accepted = len(accepted)

        commit = Commit(
            offsets={tp: (stored.get(tp), offset) for tp, offset in next_offsets.items()},
            claims=[self.keys.seen_event(event.event_id) for event in accepted],
            watermark_us=reached_us if accepted else None,
            produced_ms=produced_ms,
        )
        cells: Cells = {}
        new_histories = await self._contributions(accepted, times, commit, cells)
        # A delta can fall in an expired bucket: a late event, still within the history retention,
        # in a minute, hour or UTC day older than their retention (62 days), or a late deal_created
        # that changes the lead source of one of the deal's wins years back. Writing it would
        # recreate a bucket holding a fragment; nothing reads it (rolling windows are refused
        # before their horizon, see RetentionPolicy.window_horizon_s, and local-day and month
        # buckets expire only when every event they could hold is too old), so it is not written.
        pruning_us = max(reached_us, self.prune_floor_us or NO_WATERMARK)
        cutoffs = self.retention.cutoffs(pruning_us) if pruning_us != NO_WATERMARK else None
        commit.contributions, commit.bucket_ends = expand_cells(cells, self.calendar, cutoffs)
        stats["processed"] = result.accepted
        stats["duplicates"] = result.duplicates
        for code, count in result.rejected_by_code.items():
            stats[f"rejected:{code}"] = count
        commit.stats = stats
        for tp, behind in lag.items():
            commit.hash_fields.append((self.keys.consumer_lag, tp, str(behind)))

        if dead:
            await self.dead_letters(dead)
        result.change_id = await self.store.commit(commit)
        for deal_id, known in new_histories.items():
            self.deal_cache.remember(deal_id, known)
        return result

    def _likely_reads(self, parsed: list[tuple[RawRecord, CrmEvent | Rejection]]) -> tuple[list[str], list[str]]:
        """The deals (not cached) and customers a batch will likely read: those its deal events name,
        and the customers of the cached deals among them."""
        deals: dict[str, None] = {}
        customers: dict[str, None] = {}
        cache = self.deal_cache
        for _, item in parsed:
            if type(item) in _DEAL_TYPES:
                event = cast(DealCreatedEvent, item)
                if event.customer_id is not None:
                    customers[event.customer_id] = None
                cached = cache.get(event.deal_id)
                if cached is None:
                    deals[event.deal_id] = None
                else:
                    customers.update((entry.customer_id, None) for entry in cached[0] if entry.customer_id is not None)
        return list(deals), list(customers)

    async def _contributions(
        self, events: list[CrmEvent], times: list[int], commit: Commit, delta: Cells
    ) -> dict[str, tuple[list[DealEvent], str]]:
        """Add the batch's contribution deltas to ``delta`` and the rest of its changes to the commit;
        returns the deals' new histories (``times``: each event's occurred_at in epoch microseconds)."""
        deal_events: dict[str, list[DealEvent]] = {}
        # Directory members per (manager, team, 15-minute slot): the local month is the same
        # throughout a slot, so it is looked up once per slot, not once per event.
        seen_in: set[tuple[str, str | None, int]] = set()
        activity_us: dict[str, int] = {}
        for event, t_us in zip(events, times, strict=True):
            seen_in.add((event.manager_id, event.team_id, t_us // SLOT_US))
            if type(event) in _DEAL_TYPES:
                # (every deal event has its deal_id)
                deal_events.setdefault(cast(DealCreatedEvent, event).deal_id, []).append(
                    DealEvent.from_event(event, t_us)
                )
            else:
                activity_contributions(event, t_us, delta)
                of_deal = event.deal_id
                if of_deal is not None and t_us > activity_us.get(of_deal, -1):
                    activity_us[of_deal] = t_us
        for deal_id, t_us in activity_us.items():
            commit.deal_activity[deal_id] = score_s(t_us)
        members = commit.members
        for manager, team, slot in seen_in:
            members.add((self.keys.managers, manager))
            if team is not None:
                month = self.calendar.local_labels(slot * SLOT_US)[1]
                members.add((self.keys.teams, team))
                members.add((self.keys.team_managers(team), manager))
                members.add((self.keys.team_month_managers(team, month), manager))
        if not deal_events:
            return {}

        missing = [deal_id for deal_id in deal_events if deal_id not in self.deal_cache]
        known = {
            **await self.store.deals(missing),
            **{d: self.deal_cache[d] for d in deal_events if d in self.deal_cache},
        }

        # Wins by customer before and after, for the deals whose customer or wins may change.
        customer_changes: dict[str, dict[str, list[Win]]] = {}
        new_histories: dict[str, tuple[list[DealEvent], str]] = {}
        for deal_id, added in deal_events.items():
            old_history, old_digest = known[deal_id]
            new_history = [*old_history, *added]
            before = deal_contributions(old_history)
            after = deal_contributions(new_history)
            subtract_into(delta, before.contributions, after.contributions)
            key = self.keys.deal(deal_id)
            encoded = self.store.encode_deal(new_history)
            commit.expected[key] = old_digest
            commit.values[key] = encoded
            # Only deals outside the open pipeline may expire: an open deal is current state.
            commit.deal_expiry[key] = None if after.is_open or after.latest_us is None else deal_end_s(after.latest_us)
            clock = deal_clock(new_history) if after.is_open else None
            commit.open_deals[deal_id] = (
                None if clock is None else (score_s(clock.stage_since_us), score_s(clock.latest_us))
            )
            new_histories[deal_id] = (new_history, digest(encoded))
            if before.customer_id == after.customer_id and before.wins == after.wins:
                continue
            if before.customer_id is not None:
                customer_changes.setdefault(before.customer_id, {})[deal_id] = []
            if after.customer_id is not None:
                customer_changes.setdefault(after.customer_id, {})[deal_id] = list(after.wins)
        if not customer_changes:
            return new_histories
        current = await self.store.customers(list(customer_changes))
        for customer_id, changed in customer_changes.items():
            old_wins, old_digest = current[customer_id]
            new_wins = {**old_wins, **changed}
            before_c = customer_contributions(w for wins in old_wins.values() for w in wins)
            after_c = customer_contributions(w for wins in new_wins.values() for w in wins)
            subtract_into(delta, before_c, after_c)
            key = self.keys.customer(customer_id)
            encoded = self.store.encode_customer(new_wins)
            commit.expected[key] = old_digest
            commit.values[key] = encoded if encoded != b"{}" else b""
        return new_histories


async def apply_until_done(
    processor: BatchProcessor,
    records: Sequence[RawRecord],
    lag: dict[str, int],
    floors: dict[str, int] | None = None,
) -> BatchResult:
    """Apply a batch, waiting out Redis and Kafka outages (with backoff) rather than dropping it."""
    delay = RETRY_INITIAL_S
    while True:
        try:
            return await processor.process(records, lag, floors)
        except TRANSIENT as exc:
            log.warning("batch of %d records not applied (%s); retrying in %.1fs", len(records), exc, delay)
            processor.forget()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
