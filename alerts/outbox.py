"""The durable outbox: notifications committed with the state reach the Kafka outbox topic, and a
consumer per receiver takes them from there and sends them, retried with back-off.

1. ``OutboxRelay`` copies the pending-outbox Redis stream (written by the commit script) to the
   topic, key = receiver name, then moves its cursor: a crash in between copies again (at least once).
2. ``ReceiverSender`` (one per receiver, its own consumer group) reads the topic, skips other
   receivers' records and ids already sent, sends, records ``sent`` (dedupe key + history) and only
   then commits the Kafka offset. A receiver that is down is retried with exponential back-off
   without end, so nothing is lost and the other receivers go on; one that refuses for good
   (a 4xx answer, a 5xx SMTP reply) is recorded as ``gave_up`` and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from alerts import metrics
from alerts.errors import PermanentSendError, SendError
from services.schemas.alerts import Notification, Receiver
from services.topics import AlertNames

log = logging.getLogger(__name__)

Deliver = Callable[[Receiver, Notification], Awaitable[None]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class OutboxRelay:
    """Copies committed notifications from Redis to the outbox topic."""

    def __init__(self, redis: Redis, names: AlertNames, producer: AIOKafkaProducer, *, batch: int = 200) -> None:
        self.redis = redis
        self.names = names
        self.producer = producer
        self.batch = batch

    async def relay_once(self) -> int:
        cursor = await self.redis.get(self.names.outbox_cursor)
        start = "(" + _text(cursor) if cursor else "-"
        entries: list[tuple[Any, dict[Any, Any]]] = await self.redis.xrange(  # type: ignore[assignment]
            self.names.pending_outbox, min=start, max="+", count=self.batch
        )
        if not entries:
            return 0
        futures = []
        for _, fields in entries:
            data = fields[b"data"]
            receiver = orjson.loads(data)["receiver"]
            futures.append(await self.producer.send(self.names.outbox_topic, value=data, key=receiver.encode()))
        for future in futures:
            await future
        await self.redis.set(self.names.outbox_cursor, _text(entries[-1][0]))
        return len(entries)

    async def run(self, idle_s: float = 0.05) -> None:
        while True:
            try:
                if await self.relay_once() == 0:
                    await asyncio.sleep(idle_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay paused: %r; retrying", exc)
                await asyncio.sleep(1.0)


class ReceiverSender:
    """Sends one receiver's notifications from the outbox topic, each once."""

    def __init__(
        self,
        redis: Redis,
        names: AlertNames,
        consumer: AIOKafkaConsumer,
        receiver: Receiver,
        deliver: Deliver,
        *,
        retry_initial_s: float,
        retry_max_s: float,
        sent_ttl_s: int,
        history_maxlen: int,
    ) -> None:
        self.redis = redis
        self.names = names
        self.consumer = consumer
        self.receiver = receiver
        self.deliver = deliver
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.sent_ttl_s = sent_ttl_s
        self.history_maxlen = history_maxlen

    async def _history(self, entry: dict[str, Any]) -> None:
        await self.redis.xadd(
            self.names.history, {"data": orjson.dumps(entry)}, maxlen=self.history_maxlen, approximate=True
        )

    def _entry(self, notification: Notification, outcome: str, **extra: Any) -> dict[str, Any]:
        return {
            "kind": "notification",
            "outcome": outcome,
            "at": datetime.now(UTC).isoformat(),
            "id": notification.id,
            "receiver": self.receiver.name,
            "status": notification.status,
            "repeat": notification.repeat,
            "firing": [alert.fingerprint for alert in notification.firing],
            "resolved": [alert.fingerprint for alert in notification.resolved],
            **extra,
        }

    async def handle(self, notification: Notification) -> None:
        """Send one notification unless it was sent before; retries until sent or refused for good."""
        sent_key = self.names.sent(self.receiver.name, notification.id)
        if await self.redis.exists(sent_key):
            metrics.NOTIFICATIONS.labels(receiver=self.receiver.name, outcome="duplicate").inc()
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.deliver(self.receiver, notification)
            except PermanentSendError as exc:
                log.error("giving up notification %s: %s", notification.id, exc)
                metrics.NOTIFICATIONS.labels(receiver=self.receiver.name, outcome="gave_up").inc()
                await self._history(self._entry(notification, "gave_up", attempt=attempt, error=str(exc)))
                return
            except SendError as exc:
                delay = min(self.retry_initial_s * 2 ** (attempt - 1), self.retry_max_s)
                log.warning(
                    "notification %s attempt %d failed (%s); next in %.1f s", notification.id, attempt, exc, delay
                )
                metrics.NOTIFICATIONS.labels(receiver=self.receiver.name, outcome="failed").inc()
                await self._history(self._entry(notification, "failed", attempt=attempt, error=str(exc)))
                await asyncio.sleep(delay)
                continue
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(sent_key, b"1", ex=self.sent_ttl_s)
                pipe.xadd(
                    self.names.history,
                    {"data": orjson.dumps(self._entry(notification, "sent", attempt=attempt))},
                    maxlen=self.history_maxlen,
                    approximate=True,
                )
                await pipe.execute()
            metrics.NOTIFICATIONS.labels(receiver=self.receiver.name, outcome="sent").inc()
            return

    async def run(self) -> None:
        """Consume forever (a worker task)."""
        name = self.receiver.name.encode()
        while True:
            batches = await self.consumer.getmany(timeout_ms=500, max_records=50)
            for tp, messages in batches.items():
                for message in messages:
                    if message.key == name and message.value is not None:
                        notification = Notification.model_validate_json(message.value)
                        await self._with_redis_retry(notification)
                    await self.consumer.commit({TopicPartition(tp.topic, tp.partition): message.offset + 1})

    async def _with_redis_retry(self, notification: Notification) -> None:
        while True:
            try:
                await self.handle(notification)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis unreachable: the record stays uncommitted; try again
                log.warning("notification %s: %r; retrying", notification.id, exc)
                await asyncio.sleep(1.0)
