"""Producing validated events to the Kafka event topic.

The Kafka producer is started lazily, on the first ingest or health check, so the API serves
reads and /healthz while Kafka is down; a failed start is retried on the next request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka.errors import KafkaError

from dashboard_api.errors import KafkaUnavailable
from services.kafka import LazyProducer
from services.settings import Settings

log = logging.getLogger(__name__)


class EventPublisher:
    """Writes events to the event topic (key = ``event.kafka_key``, value = ``canonical_json(event)``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._bootstrap_servers = settings.kafka.bootstrap_servers
        self._topic = settings.kafka.events_topic
        self._timeout_s = settings.api.kafka_timeout_s
        self._producer = LazyProducer(
            settings,
            acks="all",
            linger_ms=5,
            request_timeout_ms=int(self._timeout_s * 1000),
            client_id="crm-pulse-api",
        )

    async def publish(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce every (key, value) message and wait for its delivery; raise KafkaUnavailable on failure.

        A failure can leave some events written: a retry is safe, because the worker ignores
        a repeated event_id.
        """
        try:
            async with asyncio.timeout(self._timeout_s):
                producer = await self._producer.get()
                deliveries = [await producer.send(self._topic, value=value, key=key) for key, value in messages]
                await asyncio.gather(*deliveries)
        except TimeoutError:
            raise KafkaUnavailable(
                f"Kafka at {self._bootstrap_servers} did not take the events within {self._timeout_s:g} s; retry later"
            ) from None
        except (KafkaError, OSError) as exc:
            raise KafkaUnavailable(
                f"Kafka at {self._bootstrap_servers} is unavailable ({exc.__class__.__name__}: {exc}); retry later"
            ) from None

    async def is_reachable(self, timeout_s: float = 2.0) -> bool:
        """Whether a broker answers a metadata request now (informative, for /healthz)."""
        try:
            async with asyncio.timeout(timeout_s):
                producer = await self._producer.get()
                await producer.client.fetch_all_metadata()
        except (TimeoutError, KafkaError, OSError) as exc:
            log.debug("kafka health check failed: %s", exc)
            return False
        return True

    async def close(self) -> None:
        await self._producer.close()
