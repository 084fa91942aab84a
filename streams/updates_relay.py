"""Relay the KPI change feed (a Redis stream written atomically with the state) to Kafka.

The worker's commit appends, in the same Lua script that changes the state, one entry with
the new absolute values of every touched day, month and current hash. This relay copies each
entry's buckets to the ``kpi.updates`` topic as one record per scope and bucket, then moves a
cursor kept in Redis. It is the transactional-outbox pattern: a crash between sending and
moving the cursor sends the same records again (at least once), never fewer; the records
carry absolute values and the entry id as ``seq``, so consumers deduplicate or simply
overwrite. Only one relay runs at a time across workers (a Redis lease). Relayed entries
older than the resume window are trimmed, so the feed stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from services.topics import RedisKeys

log = logging.getLogger(__name__)

Send = Callable[[Sequence[tuple[bytes, bytes]]], Awaitable[None]]
"""Sends (key, value) records to kpi.updates and returns once the broker acknowledged them."""

LEASE_S = 10
RESUME_WINDOW_MS = 15 * 60 * 1000
"""Change-feed entries stay this long after they are relayed, for WebSocket clients that resume."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def update_records(entry_id: str, entry: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The kpi.updates records of one change-feed entry: key = scope, value = absolute measures."""
    records: list[tuple[bytes, bytes]] = []
    for bucket in entry.get("buckets", []):
        value = {
            "seq": entry_id,
            "scope": bucket["scope"],
            "granularity": bucket["g"],
            "bucket": bucket["b"],
            "measures": {field: int(amount) for field, amount in bucket["m"].items()},
            "produced_ms": entry.get("produced_ms"),
            "committed_ms": entry.get("committed_ms"),
        }
        records.append((bucket["scope"].encode(), orjson.dumps(value)))
    for current in entry.get("current", []):
        value = {
            "seq": entry_id,
            "scope": current["scope"],
            "granularity": "current",
            "bucket": "",
            "measures": {field: int(amount) for field, amount in current["m"].items()},
            "produced_ms": entry.get("produced_ms"),
            "committed_ms": entry.get("committed_ms"),
        }
        records.append((current["scope"].encode(), orjson.dumps(value)))
    return records


def producer_sender(producer: AIOKafkaProducer, topic: str) -> Send:
    """A :data:`Send` over a plain aiokafka producer: every record queued, then every ack awaited."""

    async def send(records: Sequence[tuple[bytes, bytes]]) -> None:
        futures = [await producer.send(topic, key=key, value=value) for key, value in records]
        for future in futures:
            await future

    return send


class UpdatesRelay:
    """Copies change-feed entries to Kafka while it holds the relay lease."""

    def __init__(self, redis: Redis, keys: RedisKeys, send: Send, *, batch: int = 200) -> None:
        self.redis = redis
        self.keys = keys
        self.send = send
        self.batch = batch
        self.owner = uuid.uuid4().hex

    async def _hold_lease(self) -> bool:
        """Take or renew the lease; True while this relay is the one that may run."""
        if await self.redis.set(self.keys.relay_lease, self.owner, nx=True, ex=LEASE_S):
            return True
        holder = await self.redis.get(self.keys.relay_lease)
        if holder is not None and _text(holder) == self.owner:
            await self.redis.expire(self.keys.relay_lease, LEASE_S)
            return True
        return False

    async def relay_once(self) -> int:
        """Send the entries after the cursor (up to one batch); returns how many entries were relayed."""
        cursor = await self.redis.get(self.keys.relay_cursor)
        start = "(" + _text(cursor) if cursor else "-"
        entries: list[tuple[Any, dict[Any, Any]]] = await self.redis.xrange(  # type: ignore[assignment]
            self.keys.changes, min=start, max="+", count=self.batch
        )
        if not entries:
            return 0
        records: list[tuple[bytes, bytes]] = []
        for entry_id, fields in entries:
            entry = orjson.loads(fields[b"data"])
            records.extend(update_records(_text(entry_id), entry))
        if records:
            await self.send(records)
        last = _text(entries[-1][0])
        await self.redis.set(self.keys.relay_cursor, last)
        await self._trim(last)
        return len(entries)

    async def _trim(self, relayed: str) -> None:
        """Drop feed entries that are relayed and older than the resume window (the feed stays bounded)."""
        keep_from_ms = int(time.time() * 1000) - RESUME_WINDOW_MS
        relayed_ms = int(relayed.split("-")[0])
        if keep_from_ms <= 0:
            return
        # Never past the cursor: entries not yet relayed must stay.
        minid = f"{min(keep_from_ms, relayed_ms)}-0"
        await self.redis.xtrim(self.keys.changes, minid=minid, approximate=True)

    async def run(self, idle_s: float = 0.05) -> None:
        """Relay forever (a worker task); survives Redis and Kafka outages by retrying."""
        while True:
            try:
                if not await self._hold_lease():
                    await asyncio.sleep(LEASE_S / 2)
                    continue
                if await self.relay_once() == 0:
                    await asyncio.sleep(idle_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("kpi.updates relay paused: %r; retrying", exc)
                await asyncio.sleep(1.0)
