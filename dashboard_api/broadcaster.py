"""Fan-out of the worker's change feed and the alert history to the WebSocket clients of this process.

One task per process reads the Redis change stream and the alert-history stream with one
XREAD BLOCK and hands every change to the clients subscribed to its scope, through one bounded
queue per client. Handing over never waits: a client whose queue is full is dropped (the
WebSocket session then closes it with code 1013), so a slow client never slows the others.

Cost per message is what limits the number of clients, so:

* each bucket change is derived once and serialized once per distinct KPI filter among the
  clients that want it; those clients share the same ``str``;
* the reader fans out at most once per tick (``ws_tick_s``): the entries read in one go are
  coalesced, so a bucket changed by several entries goes out once, with its newest absolute
  value and the position of its newest change;
* a client's queue coalesces too: a newer change of a bucket replaces one still queued, and
  takes its place at the end of the queue. Positions ``(seq, i)`` therefore reach a client
  in increasing order, and every change left out has a later one of the same bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from dashboard_api.auth import ScopeFilter
from dashboard_api.changes import ChangeEntry, SeqKey, parse_change_entry, seq_key
from dashboard_api.errors import ChangeFeedError
from dashboard_api.live_messages import PIPELINE, PingMessage, alert_text, decode_alert_entry
from dashboard_api.metrics import ApiMetrics
from services.auth import alert_scopes
from services.kpis.measures import derive_kpis, derive_pipeline
from services.topics import AlertNames, RedisKeys

log = logging.getLogger(__name__)

ZERO_SEQ: SeqKey = (0, 0)
Position = tuple[int, int, int]
"""Where a message stands in the change feed: (stream id milliseconds, stream id counter, i)."""
WHOLE_ENTRY = 1 << 30
"""An ``i`` past every item of an entry: the position of "this entry and everything before it"."""
ZERO_POSITION: Position = (0, 0, WHOLE_ENTRY)
KpiFilter = frozenset[str] | None
LAST_VALUES_KEPT = 100_000
"""Buckets whose last KPI values the reader remembers, to tell which KPIs a change touched."""


def position(seq: SeqKey, index: int = WHOLE_ENTRY) -> Position:
    return (seq[0], seq[1], index)


@dataclass(frozen=True, slots=True)
class OutgoingChange:
    """A serialized change or pipeline message of one bucket, queued for a client."""

    position: Position
    scope: str
    key: tuple[str, str, str, str]
    """What it replaces in a queue: (kind, scope, granularity, bucket)."""
    text: str


@dataclass(frozen=True, slots=True)
class OutgoingAlert:
    """A serialized alert-ticker message."""

    seq: SeqKey
    text: str


@dataclass(frozen=True)
class SnapshotRequest:
    """Queued by a subscribe: the session sends a snapshot of these scopes (None: all) in order."""

    scopes: tuple[str, ...] | None
    resync: bool = False


@dataclass(frozen=True)
class ResumeRequest:
    """Queued by a subscribe with a resume point: replay the changes of these scopes after it."""

    scopes: tuple[str, ...] | None
    since: str
    index: int | None


@dataclass(frozen=True)
class AlertReplayRequest:
    """Queued by a subscribe with ``alerts_since``: replay the alert history after it (what ``readable`` allows)."""

    since: str
    readable: ScopeFilter


@dataclass(frozen=True)
class OutgoingText:
    """Any other message for the client (errors, resumed)."""

    text: str


PING = OutgoingText(PingMessage().model_dump_json())
PING_KEY = "ping"
"""A ping still queued is not queued again."""

QueueItem = OutgoingChange | OutgoingAlert | SnapshotRequest | ResumeRequest | AlertReplayRequest | OutgoingText


class LiveClient:
    """One WebSocket client: what it subscribed to, and its bounded, coalescing queue of messages."""

    def __init__(self, queue_size: int) -> None:
        self._queue: OrderedDict[Hashable, QueueItem] = OrderedDict()
        self._unique = itertools.count()
        self._ready = asyncio.Event()
        self.queue_size = queue_size
        self.all_scopes = False
        self.scopes: set[str] = set()
        self.kpis: KpiFilter = None
        self.alerts: ScopeFilter | None = None
        """Following the alert ticker: the alerts of the scopes it reads (None: not following)."""
        # Changes up to a snapshot's (or a replay's) position are in it already: skip them.
        self.floor_all: Position = ZERO_POSITION
        self.floors: dict[str, Position] = {}
        self.alerts_floor: SeqKey = ZERO_SEQ
        self.coalesced = 0
        self.overflowed = asyncio.Event()

    # -- subscriptions --

    def wants(self, scope: str) -> bool:
        return self.all_scopes or scope in self.scopes

    def wants_kpis(self, touched: frozenset[str] | None) -> bool:
        """Whether a change touching these KPIs (None: unknown, maybe all) is for this client's filter."""
        return self.kpis is None or touched is None or not self.kpis.isdisjoint(touched)

    def is_news(self, change: OutgoingChange) -> bool:
        """Still subscribed, and newer than the snapshot or replay the client has of this scope."""
        if not self.wants(change.scope):
            return False
        floor = self.floors.get(change.scope, ZERO_POSITION)
        if self.all_scopes and self.floor_all > floor:
            floor = self.floor_all
        return change.position > floor

    def subscribe(
        self,
        scopes: tuple[str, ...] | None,
        *,
        kpis: Sequence[str] | None = None,
        resume: tuple[str, int | None] | None = None,
    ) -> None:
        """Follow these scopes (None: all) and queue their snapshot, or their replay, ahead of their changes."""
        if scopes is None:
            self.all_scopes = True
        else:
            self.scopes.update(scopes)
        if kpis is not None:
            self.kpis = frozenset(kpis)
        if resume is None:
            self.offer(SnapshotRequest(scopes))
        else:
            self.offer(ResumeRequest(scopes, resume[0], resume[1]))

    def wants_alert(self, scopes: Iterable[str]) -> bool:
        """Follows the ticker and may see an alert concerning these scopes (``alert_scopes``)."""
        return self.alerts is not None and self.alerts.allows_any(scopes)

    def subscribe_alerts(self, readable: ScopeFilter, since: str | None = None) -> None:
        """Follow the alerts of the scopes ``readable`` allows, after replaying those since ``since``."""
        self.alerts = readable
        if since is not None:
            self.offer(AlertReplayRequest(since, readable))

    def unsubscribe(self, scopes: tuple[str, ...] | None) -> None:
        if scopes is None:
            self.all_scopes = False
            self.scopes.clear()
        else:
            self.scopes.difference_update(scopes)

    def caught_up(self, scopes: tuple[str, ...] | None, upto: Position) -> None:
        """The client has everything of these scopes (None: all) up to this position."""
        if scopes is None:
            self.floor_all = max(self.floor_all, upto)
        else:
            for scope in scopes:
                self.floors[scope] = max(self.floors.get(scope, ZERO_POSITION), upto)

    def snapshot_taken(self, scopes: tuple[str, ...] | None, seq: SeqKey) -> None:
        self.caught_up(scopes, position(seq))

    # -- queue --

    def offer(self, item: QueueItem, key: Hashable | None = None) -> bool:
        """Queue a message without waiting; one with the key of a queued one replaces it (at the end).
        On overflow mark the client for disconnection."""
        if self.overflowed.is_set():
            return False
        queue = self._queue
        if key is not None and key in queue:
            del queue[key]
            self.coalesced += 1
        elif len(queue) >= self.queue_size:
            self.overflowed.set()
            return False
        queue[key if key is not None else next(self._unique)] = item
        self._ready.set()
        return True

    def offer_change(self, change: OutgoingChange) -> bool:
        return self.offer(change, change.key)

    def pending(self) -> int:
        return len(self._queue)

    def get_nowait(self) -> QueueItem | None:
        if not self._queue:
            self._ready.clear()
            return None
        return self._queue.popitem(last=False)[1]

    async def wait(self) -> None:
        """Until a message is queued (the heartbeat queues one every interval)."""
        await self._ready.wait()


@dataclass
class _Pending:
    """One bucket (or open pipeline) to fan out: its newest change among the entries of a tick."""

    position: Position
    seq: str
    index: int
    scope: str
    granularity: str
    bucket: str
    measures: Mapping[str, int]


class ReplayGap(Exception):
    """The change feed no longer holds every entry after the resume point."""


class ChangeBroadcaster:
    """Reads the change feed and alert history (one task per process) and fans them out to live clients."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        metrics: ApiMetrics,
        probabilities: Mapping[str, Decimal],
        *,
        alert_names: AlertNames | None = None,
        tick_s: float = 0.0,
        heartbeat_s: float = 15.0,
        block_ms: int = 2000,
        batch_size: int = 500,
        max_replay_entries: int = 20_000,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._alerts = alert_names
        self._metrics = metrics
        self._probabilities = dict(probabilities)
        self._tick_s = tick_s
        self._heartbeat_s = heartbeat_s
        # Below redis-py's default socket timeout (5 s), which would otherwise cut a blocked XREAD.
        self._block_ms = block_ms
        self._batch_size = batch_size
        self.max_replay_entries = max_replay_entries
        self._clients: set[LiveClient] = set()
        self._last_id: str | None = None
        self._last_alert_id: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._last_kpis: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()
        self.entries_seen = 0
        self.alerts_seen = 0

    # -- clients --

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def register(self, client: LiveClient) -> None:
        self._clients.add(client)
        self._metrics.ws_clients.set(len(self._clients))

    def unregister(self, client: LiveClient) -> None:
        self._clients.discard(client)
        self._metrics.ws_clients.set(len(self._clients))

    # -- lifecycle --

    async def start(self, *, resolve_timeout_s: float = 2.0) -> None:
        """Start reading after the streams' current last entries (what XREAD "$" means, without
        the gap "$" would leave between two reads)."""
        try:
            self._last_id, self._last_alert_id = await asyncio.wait_for(self._tail_ids(), timeout=resolve_timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("change feed: Redis not reachable at startup (%s); will retry", exc)
        self._task = asyncio.create_task(self._run(), name="change-feed-broadcaster")
        self._heartbeat = asyncio.create_task(self._beat(), name="live-heartbeat")

    async def stop(self) -> None:
        for task in (self._task, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._heartbeat = None

    async def _beat(self) -> None:
        """Queue a ping for every client each interval (one timer per process, not one per client)."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            for client in list(self._clients):
                client.offer(PING, key=PING_KEY)

    async def _tail_ids(self) -> tuple[str, str | None]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xrevrange(self._keys.changes, count=1)
            if self._alerts is not None:
                pipe.xrevrange(self._alerts.history, count=1)
            tails = await pipe.execute()
        ids = [_text(tail[0][0]) if tail else "0-0" for tail in tails]
        return ids[0], ids[1] if len(ids) > 1 else None

    async def _run(self) -> None:
        backoff = 0.2
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self._last_id is None:
                    self._last_id, self._last_alert_id = await self._tail_ids()
                streams = {self._keys.changes: self._last_id}
                if self._alerts is not None and self._last_alert_id is not None:
                    streams[self._alerts.history] = self._last_alert_id
                response = await self._redis.xread(streams, count=self._batch_size, block=self._block_ms)  # type: ignore[arg-type]
                backoff = 0.2
            except (RedisError, OSError) as exc:
                log.warning("change feed: reading %s failed (%s); retrying in %.1f s", self._keys.changes, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            began = loop.time()
            entries: list[ChangeEntry] = []
            for stream, entry_id, fields in _stream_entries(response):
                if _text(stream) == self._keys.changes:
                    self._last_id = _text(entry_id)
                    self.entries_seen += 1
                    try:
                        entries.append(parse_change_entry(entry_id, fields))
                    except ChangeFeedError as exc:
                        log.error("change feed: skipping entry: %s", exc)
                else:
                    self._last_alert_id = _text(entry_id)
                    self.alerts_seen += 1
                    self.publish_alert(_text(entry_id), fields)
            if entries:
                self.publish_many(entries)
            # At most one fan-out per tick: what arrives meanwhile is read, and coalesced, at once.
            await asyncio.sleep(max(0.0, self._tick_s - (loop.time() - began)))

    # -- fan-out --

    def publish(self, entry: ChangeEntry) -> None:
        """Queue one change entry for every client subscribed to a scope it touches (never waits)."""
        self.publish_many([entry])

    def publish_many(self, entries: Sequence[ChangeEntry]) -> None:
        """Queue change entries, coalesced per bucket, for every client that wants them (never waits)."""
        # Who follows what, once per fan-out: an entry touches many scopes, most followed by nobody.
        everything: list[LiveClient] = []
        by_scope: dict[str, list[LiveClient]] = {}
        for client in self._clients:
            if client.all_scopes:
                everything.append(client)
            else:
                for scope in client.scopes:
                    by_scope.setdefault(scope, []).append(client)
        delivered = False
        for item in coalesce(entries):
            followers = by_scope.get(item.scope)
            if not followers and not everything:
                # Nobody follows it: forget its last values rather than keep them (they would go stale).
                self._last_kpis.pop((item.scope, item.granularity, item.bucket), None)
                continue
            targets = everything + followers if followers else everything
            values: dict[str, Any] | None = None
            if item.granularity == "current":
                targets = [client for client in targets if client.kpis is None or PIPELINE in client.kpis]
            else:
                values, touched = self._touched(item)
                targets = [client for client in targets if client.wants_kpis(touched)]
            if not targets:
                continue
            texts: dict[KpiFilter, str] = {}
            key = ("p" if item.granularity == "current" else "b", item.scope, item.granularity, item.bucket)
            for client in targets:
                text = texts.get(client.kpis)
                if text is None:
                    text = texts[client.kpis] = self.render(item, client.kpis, values)
                if client.offer_change(OutgoingChange(item.position, item.scope, key, text)):
                    delivered = True
                elif client in self._clients:
                    self._drop(client)
        if delivered:
            now = time.time()
            for entry in entries:
                if entry.produced_ms:  # 0 or absent: no Kafka timestamp to measure from
                    self._metrics.event_to_push.observe(max(0.0, now - entry.produced_ms / 1000))

    def _touched(self, item: _Pending) -> tuple[dict[str, Any], frozenset[str] | None]:
        """The bucket's KPI values, and those whose value this change moved (None: unknown, the bucket
        was not seen before)."""
        values = derive_kpis(item.measures).model_dump(mode="json")
        key = (item.scope, item.granularity, item.bucket)
        before = self._last_kpis.pop(key, None)
        self._last_kpis[key] = values
        if len(self._last_kpis) > LAST_VALUES_KEPT:
            self._last_kpis.popitem(last=False)
        if before is None:
            return values, None
        return values, frozenset(name for name, value in values.items() if before.get(name) != value)

    def render(self, item: _Pending, kpis: KpiFilter, values: dict[str, Any] | None = None) -> str:
        """The change or pipeline message of one bucket, with only the KPIs of the filter (``values``:
        the bucket's KPIs, if already derived)."""
        if item.granularity == "current":
            pipeline = derive_pipeline(item.measures, self._probabilities).model_dump(mode="json")
            message: dict[str, Any] = {
                "type": "pipeline",
                "seq": item.seq,
                "i": item.index,
                "scope": item.scope,
                "pipeline": pipeline,
            }
        else:
            if values is None:
                values = derive_kpis(item.measures).model_dump(mode="json")
            if kpis is not None:
                values = {name: value for name, value in values.items() if name in kpis}
            message = {
                "type": "change",
                "seq": item.seq,
                "i": item.index,
                "scope": item.scope,
                "g": item.granularity,
                "b": item.bucket,
                "kpis": values,
            }
        return orjson.dumps(message).decode()

    def publish_alert(self, entry_id: str, fields: Mapping[Any, Any]) -> None:
        """Queue one alert-history entry for every client following alerts that may see it."""
        if not any(client.alerts is not None for client in self._clients):
            return
        decoded = _alert(entry_id, fields)
        if decoded is None:
            return
        alert, scopes = decoded
        for client in [client for client in self._clients if client.wants_alert(scopes)]:
            if not client.offer(alert) and client in self._clients:
                self._drop(client)

    def _drop(self, client: LiveClient) -> None:
        log.warning("live client dropped: more than %d messages queued", client.queue_size)
        self._metrics.ws_dropped.inc()
        self.unregister(client)

    # -- resume --

    async def replay(self, client: LiveClient, request: ResumeRequest) -> tuple[list[str], str]:
        """The change and pipeline messages of the request's scopes after its resume point, coalesced,
        and the id of the last feed entry they cover. Raises ReplayGap when the feed no longer holds
        every entry after the resume point (or more than ``max_replay_entries`` of them)."""
        since = seq_key(request.since)
        start = position(since, WHOLE_ENTRY if request.index is None else request.index)
        scopes = None if request.scopes is None else set(request.scopes)
        entries: list[ChangeEntry] = []
        cursor = request.since
        last = request.since
        first_page = True
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                # The entry of the resume point itself too: its items after ``i`` are still due.
                pipe.xrange(self._keys.changes, min=cursor if first_page else f"({cursor}", max="+", count=1000)
                pipe.xinfo_stream(self._keys.changes)
                try:
                    page, info = await pipe.execute()
                except ResponseError:  # no such key: no entry was ever written (or all were deleted)
                    if since != ZERO_SEQ:
                        raise ReplayGap(f"the change feed is empty; {request.since} is unknown") from None
                    return [], request.since
            if first_page:
                _check_no_gap(since, info)
                first_page = False
            if not page:
                break
            for entry_id, fields in page:
                entry = parse_change_entry(entry_id, fields)
                if seq_key(entry.seq) > since or request.index is not None:
                    entries.append(entry)
            cursor = last = _text(page[-1][0])
            if len(entries) > self.max_replay_entries:
                raise ReplayGap(f"more than {self.max_replay_entries} changes since {request.since}")
            if len(page) < 1000:
                break
        texts: list[str] = []
        for item in coalesce(entries):
            if item.position <= start or not (scopes is None or item.scope in scopes):
                continue
            if item.granularity == "current":
                if client.kpis is None or PIPELINE in client.kpis:
                    texts.append(self.render(item, client.kpis))
            else:
                texts.append(self.render(item, client.kpis))
        return texts, max(last, request.since, key=seq_key)

    async def replay_alerts(self, since: str, readable: ScopeFilter) -> list[OutgoingAlert]:
        """The alert messages after ``since`` that the history still holds (it keeps the newest entries)
        and ``readable`` allows."""
        if self._alerts is None:
            return []
        raw: list[tuple[Any, Mapping[Any, Any]]] = await self._redis.xrange(  # type: ignore[assignment]
            self._alerts.history, min=f"({since}", max="+", count=10_000
        )
        out: list[OutgoingAlert] = []
        for entry_id, fields in raw:
            decoded = _alert(_text(entry_id), fields)
            if decoded is not None and readable.allows_any(decoded[1]):
                out.append(decoded[0])
        return out


def _check_no_gap(since: SeqKey, info: Mapping[str, Any]) -> None:
    """Every entry after ``since`` is still in the feed (XINFO STREAM of the feed)."""
    last_generated = seq_key(_text(info.get("last-generated-id") or "0-0"))
    if since > last_generated:
        raise ReplayGap(f"{since[0]}-{since[1]} is newer than the last change {last_generated[0]}-{last_generated[1]}")
    if int(info.get("entries-added") or 0) == int(info.get("length") or 0):
        return  # nothing was ever trimmed
    first = info.get("first-entry")
    if first:
        first_id = seq_key(_text(first[0]))
        if first_id > since:
            # Entries before the first one were trimmed; they may include some after ``since``.
            raise ReplayGap(f"the change feed starts at {first_id[0]}-{first_id[1]}, after the resume point")
    elif since != last_generated:
        raise ReplayGap("the change feed was trimmed past the resume point")


def coalesce(entries: Iterable[ChangeEntry]) -> list[_Pending]:
    """The buckets and pipelines the entries touch, each once with its newest values, in position order."""
    newest: dict[tuple[str, str, str], _Pending] = {}
    for entry in entries:
        seq = seq_key(entry.seq)
        index = 0
        for bucket in entry.buckets:
            key: tuple[str, str, str] = (bucket.scope, bucket.granularity, bucket.bucket)
            newest.pop(key, None)
            newest[key] = _Pending(
                position(seq, index), entry.seq, index, bucket.scope, bucket.granularity, bucket.bucket, bucket.measures
            )
            index += 1
        for current in entry.current:
            key = (current.scope, "current", "")
            newest.pop(key, None)
            newest[key] = _Pending(
                position(seq, index), entry.seq, index, current.scope, "current", "", current.measures
            )
            index += 1
    # Re-inserting on every change keeps the dict in position order.
    return list(newest.values())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _alert(entry_id: str, fields: Mapping[Any, Any]) -> tuple[OutgoingAlert, tuple[str, ...]] | None:
    """The ticker message of an alert-history entry and the scopes it concerns (None if unreadable)."""
    entry = decode_alert_entry(entry_id, fields)
    if entry is None:
        return None
    return OutgoingAlert(seq_key(entry_id), alert_text(entry_id, entry)), alert_scopes(entry)


def _stream_entries(response: Any) -> list[tuple[Any, Any, Any]]:
    """The (stream, id, fields) entries of an XREAD answer (RESP2: [[stream, [(id, fields), ...]], ...])."""
    if not response:
        return []
    return [(stream, entry_id, fields) for stream, entries in response for entry_id, fields in entries]
