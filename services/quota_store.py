"""Quotas in Kafka and Redis: each change goes to the compacted quotas topic (the source of truth),
then to Redis, which serves every read; ``restore_quotas`` rebuilds Redis from the topic (replay).

Redis keeps, per local month, a hash ``RedisKeys.quotas(month)``: manager_id -> amount in money
units (1/10,000). Beside it, ``RedisKeys.quota_offsets`` holds the topic offset of the change
applied last to each ``<manager_id>|<YYYY-MM>``, and a change is applied only when its offset is
higher. So Redis ends as the log's last record per key whatever order writers and a replay reach
it in. (A quotas topic deleted and created again starts at offset 0: rebuild with
``crm-pulse replay``, which wipes those offsets too.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from services.compacted_mirror import MirroredChange, apply_newer
from services.kafka import LazyProducer, TopicCreationError, ensure_quotas_topic, records_to_end
from services.kpis.measures import decode_hash
from services.quotas import InvalidQuota, Quota, QuotaChange, QuotaError, decode_quota_record, scope_quota_units
from services.schemas.events import units_to_decimal
from services.settings import Settings
from services.topics import RedisKeys, ScopeKind, Topics

log = logging.getLogger(__name__)


class QuotaLogUnavailable(QuotaError):
    """Kafka did not take (all) the quota changes in time; those it took are in Redis too."""


async def apply_changes(redis: Redis, keys: RedisKeys, changes: Sequence[tuple[QuotaChange, int]]) -> int:
    """Mirror (change, topic offset) pairs into Redis, skipping any older than what its key holds;
    returns how many were applied."""
    mirrored = [
        MirroredChange(
            change.key,
            keys.quotas(change.month),
            change.manager_id,
            offset,
            str(change.quota.units) if change.quota is not None else None,
        )
        for change, offset in changes
    ]
    return await apply_newer(redis, keys.quota_offsets, mirrored)


class QuotaWriter:
    """Produces quota changes to the quotas topic and mirrors them into Redis.

    The producer starts on first use, after making sure the topic exists compacted (so a write
    before any worker ran never gets an auto-created topic that would expire quotas).
    """

    def __init__(self, settings: Settings, redis: Redis, *, timeout_s: float | None = None) -> None:
        self._settings = settings
        self._redis = redis
        self._keys = RedisKeys.from_settings(settings)
        self._topic = Topics.from_settings(settings).quotas
        self._timeout_s = timeout_s if timeout_s is not None else settings.api.kafka_timeout_s
        self._producer = LazyProducer(
            settings,
            before_start=lambda: ensure_quotas_topic(settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=int(self._timeout_s * 1000),
            client_id="crm-pulse-quotas",
        )

    async def write(self, changes: Sequence[QuotaChange]) -> None:
        """Produce every change, wait for delivery, then apply the delivered ones to Redis.

        Raises QuotaLogUnavailable when Kafka did not take them all in time; writing the same
        quotas again is harmless, so the caller can simply retry.
        """
        if not changes:
            return
        sent: list[asyncio.Future[Any]] = []  # of aiokafka RecordMetadata
        problem: str | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                producer = await self._producer.get()
                for change in changes:
                    key, value = change.encode()
                    sent.append(await producer.send(self._topic, key=key, value=value))
                await asyncio.wait(sent)
        except TimeoutError:
            problem = f"did not take the quota changes within {self._timeout_s:g} s"
        except (KafkaError, OSError, TopicCreationError) as exc:
            problem = f"is unavailable ({exc.__class__.__name__}: {exc})"
        delivered = [
            (change, int(future.result().offset))
            for change, future in zip(changes, sent, strict=False)
            if future.done() and not future.cancelled() and future.exception() is None
        ]
        if delivered:
            await apply_changes(self._redis, self._keys, delivered)
        if problem is None and len(delivered) < len(changes):
            failed = next(f.exception() for f in sent if f.done() and not f.cancelled() and f.exception())
            problem = f"refused a quota change ({failed.__class__.__name__}: {failed})"
        if problem is not None:
            raise QuotaLogUnavailable(
                f"Kafka at {self._settings.kafka.bootstrap_servers} {problem}; {len(delivered)} of {len(changes)} "
                "change(s) were written. Retry: setting the same quotas again is harmless"
            )

    async def close(self) -> None:
        await self._producer.close()


# -- reads (Redis only) --


async def read_month_quotas(redis: Redis, keys: RedisKeys, month: str) -> dict[str, int]:
    """The quotas of a month: manager_id -> money units."""
    return decode_hash(await redis.hgetall(keys.quotas(month)))


async def list_month_quotas(redis: Redis, keys: RedisKeys, month: str) -> list[Quota]:
    """The quotas of a month, by manager id."""
    units = await read_month_quotas(redis, keys, month)
    return [Quota(manager, month, units_to_decimal(units[manager])) for manager in sorted(units)]


async def read_quota(redis: Redis, keys: RedisKeys, manager_id: str, month: str) -> Quota | None:
    """One manager's quota for a month, if set."""
    raw = await redis.hget(keys.quotas(month), manager_id)
    return None if raw is None else Quota(manager_id, month, units_to_decimal(int(raw)))


async def read_scope_quotas(
    redis: Redis, keys: RedisKeys, kind: ScopeKind, scope_id: str, months: Sequence[str]
) -> list[int | None]:
    """A scope's quota (money units, None when none counts) for each month, from one consistent read.

    A team's quota is the sum over the managers with an event carrying the team id in that month
    (the worker's ``team_month_managers`` set); the company's, over every manager with a quota.
    """
    async with redis.pipeline(transaction=True) as pipe:
        for month in months:
            pipe.hgetall(keys.quotas(month))
            if kind == "team":
                pipe.smembers(keys.team_month_managers(scope_id, month))
        raw = await pipe.execute() if months else []
    step = 2 if kind == "team" else 1
    results: list[int | None] = []
    for index in range(len(months)):
        month_quotas = decode_hash(raw[index * step])
        members = [m.decode() if isinstance(m, bytes) else m for m in raw[index * step + 1]] if kind == "team" else []
        results.append(scope_quota_units(kind, scope_id, month_quotas, members))
    return results


# -- rebuild from the log --


async def read_quota_log(settings: Settings) -> dict[str, tuple[QuotaChange, int]]:
    """The last record of each key of the quotas topic, read to its current end, with its offset.

    Records that do not follow the quota format are logged and skipped. A missing topic reads as empty.
    """
    topic = Topics.from_settings(settings).quotas
    latest: dict[str, tuple[QuotaChange, int]] = {}
    async for message in records_to_end(settings, topic):
        try:
            change = decode_quota_record(message.key, message.value)
        except InvalidQuota as exc:
            where = f"{topic}:{message.partition} offset {message.offset}"
            log.warning("skipping the quota record at %s: %s", where, exc)
            continue
        latest[change.key] = (change, message.offset)
    return latest


async def restore_quotas(settings: Settings, redis: Redis) -> int:
    """Mirror the quotas topic into Redis (last record per key wins); returns how many quotas it holds."""
    latest = await read_quota_log(settings)
    await apply_changes(redis, RedisKeys.from_settings(settings), list(latest.values()))
    return sum(1 for change, _ in latest.values() if change.quota is not None)
