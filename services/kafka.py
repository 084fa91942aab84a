"""Thin factories for aiokafka clients built from the settings, and topic creation.

The clients are created unstarted (aiokafka wants a running event loop, so call these from
async code); use them as ``async with producer(settings) as p: ...``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)

from services.settings import Settings
from services.topics import Topics


class TopicCreationError(Exception):
    """The broker refused to create a topic (for a reason other than that it already exists)."""


def producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A producer for the configured cluster; ``options`` go to ``AIOKafkaProducer``."""
    options.setdefault("client_id", "crm-pulse")
    return AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, **options)


def consumer(settings: Settings, *topics: str, group_id: str | None = None, **options: Any) -> AIOKafkaConsumer:
    """A consumer of ``topics``; the group defaults to ``settings.kafka.consumer_group``."""
    options.setdefault("client_id", "crm-pulse")
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=group_id if group_id is not None else settings.kafka.consumer_group,
        **options,
    )


def admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An admin client for the configured cluster (start it before use, close it after)."""
    options.setdefault("client_id", "crm-pulse-admin")
    return AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers, **options)


async def ensure_topics(
    settings: Settings,
    names: Iterable[str],
    partitions: int,
    config: Mapping[str, str] | None = None,
    *,
    replication_factor: int = 1,
) -> list[str]:
    """Create the topics that do not exist yet; the names it created. Existing topics are left as they are."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    client = admin(settings)
    await client.start()
    try:
        response = await client.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs=dict(config or {}),
                )
                for name in wanted
            ]
        )
    finally:
        await client.close()
    created: list[str] = []
    for topic, error_code, *rest in response.topic_errors:
        if error_code == 0:
            created.append(topic)
        elif error_code != TopicAlreadyExistsError.errno:
            message = rest[0] if rest and rest[0] else for_code(error_code).__name__
            raise TopicCreationError(f"could not create topic {topic!r} with {partitions} partitions: {message}")
    return created


async def partition_ids(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of a topic, sorted; none when it does not exist."""
    client = admin(settings)
    await client.start()
    try:
        described = await client.describe_topics([topic])
    finally:
        await client.close()
    return sorted(p["partition"] for t in described if t["error_code"] == 0 for p in t["partitions"])


COORDINATOR_WAIT_S = 30.0
"""How long :func:`group_members` waits for a fresh broker to have a group coordinator."""


async def group_members(settings: Settings, group_id: str) -> int:
    """How many members a consumer group has now (0 for a group that is empty or does not exist). A
    member that died without leaving counts until the broker's session timeout expires."""
    client = admin(settings)
    await client.start()
    try:
        # A broker that has not hosted a group yet creates its offsets topic on the first request for
        # a coordinator and answers "not available" until it is there (a second or so).
        delay, deadline = 0.05, asyncio.get_running_loop().time() + COORDINATOR_WAIT_S
        while True:
            try:
                responses = await client.describe_consumer_groups([group_id])
                break
            except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
    finally:
        await client.close()
    members = 0
    for response in responses:
        for group in response.groups:
            error_code, described, _state, _protocol_type, _protocol, group_members, *_ = group
            if described == group_id and error_code == 0:
                members += len(group_members)
    return members


KEEP_FOREVER = {"retention.ms": "-1"}
"""Topic config of the event log and the dead letters: Kafka is the source of truth, keep them."""


COMPACTED = {"cleanup.policy": "compact"}
"""Topic config of the quotas: the latest record per key is kept forever, a tombstone deletes it."""

QUOTAS_PARTITIONS = 1
"""Quota changes are few; one partition keeps them in one order (their offsets decide which write is newer)."""


async def ensure_quotas_topic(settings: Settings) -> list[str]:
    """Create the compacted quotas topic if missing (before anything produces to it, so it is never
    auto-created with the broker's delete policy, which would drop quotas after the retention)."""
    return await ensure_topics(settings, [Topics.from_settings(settings).quotas], QUOTAS_PARTITIONS, COMPACTED)


async def ensure_alert_config_topic(settings: Settings) -> list[str]:
    """Create the compacted topic of the alert rules, silences and acks written over the API if missing."""
    return await ensure_topics(settings, [settings.alerts.config_topic], QUOTAS_PARTITIONS, COMPACTED)


async def ensure_reports_topic(settings: Settings) -> list[str]:
    """Create the compacted topic of the saved reports if missing."""
    return await ensure_topics(settings, [Topics.from_settings(settings).reports], QUOTAS_PARTITIONS, COMPACTED)


async def ensure_product_topics(settings: Settings) -> list[str]:
    """Create the product's topics if missing: events and dead letters kept forever, KPI updates,
    and the compacted quotas, alert configuration and saved reports topics."""
    topics = Topics.from_settings(settings)
    created = await ensure_topics(settings, [topics.events, topics.dlq], settings.kafka.partitions, KEEP_FOREVER)
    created += await ensure_topics(settings, [topics.kpi_updates], settings.kafka.partitions)
    created += await ensure_quotas_topic(settings)
    created += await ensure_alert_config_topic(settings)
    created += await ensure_reports_topic(settings)
    return created


OFFSETS_BACKOFF_MS = 20
"""The retry backoff of a consumer that asks offsets first thing: its first request finds the topic's
metadata unknown, asks for it, and waits one backoff (aiokafka's default, 100 ms) before going on."""


async def bounds(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Each partition's first and end offsets (ask them before assigning the partitions, see
    :func:`records_to_end`)."""
    return await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)


async def records_to_end(
    settings: Settings, topic: str, *, last: int | None = None
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic from its beginning to its end as of the call, partition by partition in
    offset order (to rebuild state from a compacted topic), or only the ``last`` records of each
    partition. A missing topic has none."""
    partitions = [TopicPartition(topic, p) for p in await partition_ids(settings, topic)]
    if not partitions:
        return
    reader = AIOKafkaConsumer(  # no group: it reads the whole topic and commits nothing
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="crm-pulse-restore",
        retry_backoff_ms=OFFSETS_BACKOFF_MS,
    )
    await reader.start()
    try:
        # The offsets are asked before any partition is assigned: once one is, the consumer's fetch
        # waits up to fetch_max_wait_ms at its end, and the broker answers an offsets request on the
        # same connection only after it (0.5 s for an empty topic).
        starts, ends = await bounds(reader, partitions)
        if last is not None:
            starts = {tp: max(start, ends[tp] - last) for tp, start in starts.items()}
        pending = {tp for tp in partitions if starts[tp] < ends[tp]}
        if not pending:
            return
        reader.assign(list(pending))
        for tp in pending:
            reader.seek(tp, starts[tp])
        while pending:
            fetched = await reader.getmany(*pending, timeout_ms=1000, max_records=5000)
            for tp, messages in fetched.items():
                for message in messages:
                    if message.offset < ends[tp]:
                        yield message
            pending = {tp for tp in pending if await reader.position(tp) < ends[tp]}
    finally:
        await reader.stop()


class LazyProducer:
    """A producer started on first use (so a service runs while Kafka is down) and started again
    after a failed start; ``before_start`` runs once before each start attempt."""

    def __init__(
        self,
        settings: Settings,
        *,
        before_start: Callable[[], Awaitable[object]] | None = None,
        **options: Any,
    ) -> None:
        self._settings = settings
        self._before_start = before_start
        self._options = options
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def get(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._starting:
            if self._producer is None:
                if self._before_start is not None:
                    await self._before_start()
                started = producer(self._settings, **self._options)
                try:
                    await started.start()
                except BaseException:
                    # A producer that failed to start cannot be started again: drop it.
                    await started.stop()
                    raise
                self._producer = started
            return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            stopping, self._producer = self._producer, None
            await stopping.stop()


class LogUnavailable(Exception):
    """Kafka did not take a record in time; ``problem`` says how (it "did not take the change within 5 s")."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


async def send_one(lazy: LazyProducer, topic: str, key: bytes, value: bytes | None, *, timeout_s: float) -> int:
    """Produce one record (a configuration change) and wait until the log has it; its offset.

    Raises ``LogUnavailable`` when Kafka did not take it within ``timeout_s``: nothing was written,
    so the caller can retry (writing the same change again is harmless).
    """
    try:
        async with asyncio.timeout(timeout_s):
            producer = await lazy.get()
            sent = await producer.send_and_wait(topic, key=key, value=value)
    except TimeoutError:
        raise LogUnavailable(f"did not take the change within {timeout_s:g} s") from None
    except (KafkaError, OSError, TopicCreationError) as exc:
        raise LogUnavailable(f"is unavailable ({exc.__class__.__name__}: {exc})") from None
    return int(sent.offset)
