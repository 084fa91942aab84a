"""Fan-out of the worker's change feed to the WebSocket clients of this process.

One task per process reads the Redis change stream with XREAD BLOCK and hands every change
to the clients subscribed to its scope, through one bounded queue per client. Handing over
never waits: a client whose queue is full is dropped (the WebSocket session then closes it
with code 1013), so a slow client never slows the others. Each change is derived and
serialized once, whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from dashboard_api.changes import ChangeEntry, SeqKey, parse_change_entry, seq_key
from dashboard_api.errors import ChangeFeedError
from dashboard_api.live_messages import ChangeMessage, PipelineMessage
from dashboard_api.metrics import ApiMetrics
from services.kpis.measures import derive_kpis, derive_pipeline
from services.topics import RedisKeys

log = logging.getLogger(__name__)

ZERO_SEQ: SeqKey = (0, 0)


@dataclass(frozen=True)
class OutgoingChange:
    """A serialized change for one scope, queued for a client."""

    seq: SeqKey
    scope: str
    text: str


@dataclass(frozen=True)
class SnapshotRequest:
    """Queued by a subscribe: the session sends a snapshot of these scopes (None: all) in order."""

    scopes: tuple[str, ...] | None


@dataclass(frozen=True)
class OutgoingText:
    """Any other message for the client (errors)."""

    text: str


QueueItem = OutgoingChange | SnapshotRequest | OutgoingText


class LiveClient:
    """One WebSocket client: what it subscribed to, and its bounded queue of messages."""

    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=queue_size)
        self.queue_size = queue_size
        self.all_scopes = False
        self.scopes: set[str] = set()
        # Changes up to a snapshot's sequence number are in that snapshot: skip them.
        self.floor_all: SeqKey = ZERO_SEQ
        self.floors: dict[str, SeqKey] = {}
        self.overflowed = asyncio.Event()

    def wants(self, scope: str) -> bool:
        return self.all_scopes or scope in self.scopes

    def is_news(self, change: OutgoingChange) -> bool:
        """Still subscribed, and newer than the snapshot the client has of this scope."""
        if not self.wants(change.scope):
            return False
        floor = max(self.floors.get(change.scope, ZERO_SEQ), self.floor_all if self.all_scopes else ZERO_SEQ)
        return change.seq > floor

    def subscribe(self, scopes: tuple[str, ...] | None) -> None:
        """Follow these scopes (None: all) and queue their snapshot ahead of their changes."""
        if scopes is None:
            self.all_scopes = True
        else:
            self.scopes.update(scopes)
        self.offer(SnapshotRequest(scopes))

    def unsubscribe(self, scopes: tuple[str, ...] | None) -> None:
        if scopes is None:
            self.all_scopes = False
            self.scopes.clear()
        else:
            self.scopes.difference_update(scopes)

    def snapshot_taken(self, scopes: tuple[str, ...] | None, seq: SeqKey) -> None:
        if scopes is None:
            self.floor_all = max(self.floor_all, seq)
        else:
            for scope in scopes:
                self.floors[scope] = max(self.floors.get(scope, ZERO_SEQ), seq)

    def offer(self, item: QueueItem) -> bool:
        """Queue a message without waiting; on overflow mark the client for disconnection."""
        if self.overflowed.is_set():
            return False
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed.set()
            return False
        return True


class ChangeBroadcaster:
    """Reads the change stream (one task per process) and fans changes out to live clients."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        metrics: ApiMetrics,
        probabilities: Mapping[str, Decimal],
        *,
        block_ms: int = 2000,
        batch_size: int = 500,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._metrics = metrics
        self._probabilities = dict(probabilities)
        # Below redis-py's default socket timeout (5 s), which would otherwise cut a blocked XREAD.
        self._block_ms = block_ms
        self._batch_size = batch_size
        self._clients: set[LiveClient] = set()
        self._last_id: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.entries_seen = 0

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
        """Start reading after the stream's current last entry (what XREAD "$" means, without
        the gap "$" would leave between two reads)."""
        try:
            self._last_id = await asyncio.wait_for(self._tail_id(), timeout=resolve_timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("change feed: Redis not reachable at startup (%s); will retry", exc)
        self._task = asyncio.create_task(self._run(), name="change-feed-broadcaster")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _tail_id(self) -> str:
        last = await self._redis.xrevrange(self._keys.changes, count=1)
        if not last:
            return "0-0"
        entry_id = last[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                if self._last_id is None:
                    self._last_id = await self._tail_id()
                response = await self._redis.xread(
                    {self._keys.changes: self._last_id}, count=self._batch_size, block=self._block_ms
                )
                backoff = 0.2
            except (RedisError, OSError) as exc:
                log.warning("change feed: reading %s failed (%s); retrying in %.1f s", self._keys.changes, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for entry_id, fields in _stream_entries(response):
                self._last_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                self.entries_seen += 1
                try:
                    entry = parse_change_entry(entry_id, fields)
                except ChangeFeedError as exc:
                    log.error("change feed: skipping entry: %s", exc)
                    continue
                self.publish(entry)
                # Let the sessions drain their queues between entries: a batch of entries read at
                # once must not land in the queues all together.
                await asyncio.sleep(0)

    # -- fan-out --

    def publish(self, entry: ChangeEntry) -> None:
        """Queue one change entry for every client subscribed to a scope it touches (never waits)."""
        clients = list(self._clients)
        if not clients:
            return
        seq = seq_key(entry.seq)
        delivered = False
        for bucket in entry.buckets:
            targets = [client for client in clients if client.wants(bucket.scope)]
            if targets:
                message = ChangeMessage(
                    seq=entry.seq,
                    scope=bucket.scope,
                    g=bucket.granularity,
                    b=bucket.bucket,
                    kpis=derive_kpis(bucket.measures),
                )
                delivered |= self._hand_over(targets, OutgoingChange(seq, bucket.scope, message.model_dump_json()))
        for current in entry.current:
            targets = [client for client in clients if client.wants(current.scope)]
            if targets:
                pipeline = PipelineMessage(
                    seq=entry.seq, scope=current.scope, pipeline=derive_pipeline(current.measures, self._probabilities)
                )
                delivered |= self._hand_over(targets, OutgoingChange(seq, current.scope, pipeline.model_dump_json()))
        if delivered and entry.produced_ms:  # 0 or absent: no Kafka timestamp to measure from
            self._metrics.event_to_push.observe(max(0.0, time.time() - entry.produced_ms / 1000))

    def _hand_over(self, targets: list[LiveClient], change: OutgoingChange) -> bool:
        delivered = False
        for client in targets:
            if client.offer(change):
                delivered = True
            elif client in self._clients:
                log.warning("live client dropped: more than %d messages queued", client.queue_size)
                self._metrics.ws_dropped.inc()
                self.unregister(client)
        return delivered


def _stream_entries(response: Any) -> list[tuple[Any, Any]]:
    """The (id, fields) entries of an XREAD answer (RESP2: [[stream, [(id, fields), ...]], ...])."""
    if not response:
        return []
    return [(entry_id, fields) for _stream, entries in response for entry_id, fields in entries]
