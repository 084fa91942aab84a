"""Alert rules, silences and acknowledgements written over the API, and the alerts read back.

Shared by the dashboard API (which writes them) and the alerts worker (which reads them at
every evaluation tick), through the names of :class:`services.topics.AlertNames`.

Like quotas (``services.quota_store``), every change goes first to a compacted Kafka topic (the
source of truth: key ``rule:<id>``, ``silence:<id>`` or ``ack:<fingerprint>``, value the JSON or
a tombstone for a delete), then to the Redis hashes every read uses. Beside them,
``AlertNames.config_offsets`` holds the topic offset of the change applied last to each record
key, and a change is applied only when its offset is higher, so Redis ends as the log's last
record per key whatever order the API and a restore reach it in. ``restore_alert_config`` (run
by the alerts worker at startup) mirrors the topic into a Redis that lost them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from services.compacted_mirror import MirroredChange, apply_newer
from services.kafka import LazyProducer, LogUnavailable, ensure_alert_config_topic, records_to_end, send_one
from services.schemas.alerts import Acknowledgement, Rule, Silence
from services.settings import Settings
from services.topics import AlertNames

log = logging.getLogger(__name__)

HISTORY_PAGE = 500
"""History entries read per round trip while filtering them (``read_history(keep=...)``)."""
HISTORY_SCAN_LIMIT = 20_000
"""History entries one request reads at most while filtering them."""
KINDS: dict[str, type[BaseModel]] = {"rule": Rule, "silence": Silence, "ack": Acknowledgement}
"""Record key prefix -> the model of its value."""


def _decode_all(raw: Mapping[bytes, bytes], model: type[Any], what: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode()
        try:
            found[name] = model.model_validate(orjson.loads(value))
        except (ValidationError, orjson.JSONDecodeError) as exc:
            log.error("ignoring invalid %s %r in Redis: %s", what, name, exc)
    return found


async def read_dynamic(
    redis: Redis, names: AlertNames
) -> tuple[dict[str, Rule], list[Silence], dict[str, Acknowledgement]]:
    """The rules, silences and acknowledgements written over the API."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(names.rules)
        pipe.hgetall(names.silences)
        pipe.hgetall(names.acks)
        rules_raw, silences_raw, acks_raw = await pipe.execute()
    rules = _decode_all(rules_raw, Rule, "rule")
    silences = list(_decode_all(silences_raw, Silence, "silence").values())
    acks = _decode_all(acks_raw, Acknowledgement, "acknowledgement")
    return rules, silences, acks


class AlertConfigUnavailable(Exception):
    """Kafka did not take an alerting change in time: nothing was written; retrying is harmless."""


def _hash_of(names: AlertNames, kind: str) -> str:
    return {"rule": names.rules, "silence": names.silences, "ack": names.acks}[kind]


async def apply_config_changes(
    redis: Redis, names: AlertNames, changes: Sequence[tuple[str, bytes | None, int]]
) -> int:
    """Mirror (record key, JSON or None for a delete, topic offset) into Redis, skipping changes older
    than what their key holds; returns how many were applied."""
    mirrored = []
    for record_key, value, offset in changes:
        kind, _, item = record_key.partition(":")
        mirrored.append(MirroredChange(record_key, _hash_of(names, kind), item, offset, value))
    return await apply_newer(redis, names.config_offsets, mirrored)


class AlertConfigWriter:
    """Produces alerting changes to the config topic, then mirrors them into Redis (as QuotaWriter).

    The producer starts on first use, after making sure the topic exists compacted.
    """

    def __init__(self, settings: Settings, redis: Redis, *, timeout_s: float | None = None) -> None:
        self._settings = settings
        self._redis = redis
        self._names = AlertNames.from_settings(settings)
        self._timeout_s = timeout_s if timeout_s is not None else settings.api.kafka_timeout_s
        self._producer = LazyProducer(
            settings,
            before_start=lambda: ensure_alert_config_topic(settings),
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(self._timeout_s * 1000),
            client_id="crm-pulse-alert-config",
        )

    async def _write(self, record_key: str, value: bytes | None) -> None:
        try:
            offset = await send_one(
                self._producer, self._names.config_topic, record_key.encode(), value, timeout_s=self._timeout_s
            )
        except LogUnavailable as exc:
            raise AlertConfigUnavailable(
                f"Kafka at {self._settings.kafka.bootstrap_servers} {exc.problem}; {record_key} was not written. "
                "Retry: writing the same change again is harmless"
            ) from None
        await apply_config_changes(self._redis, self._names, [(record_key, value, offset)])

    async def put_rule(self, rule: Rule) -> None:
        """Create or replace an API rule (the worker sees it at its next tick)."""
        await self._write(f"rule:{rule.id}", rule.model_dump_json(by_alias=True).encode())

    async def delete_rule(self, rule_id: str) -> bool:
        """Delete an API rule; False when there is none."""
        if not await self._redis.hexists(self._names.rules, rule_id):
            return False
        await self._write(f"rule:{rule_id}", None)
        return True

    async def put_silence(self, silence: Silence) -> None:
        await self._write(f"silence:{silence.id}", silence.model_dump_json().encode())

    async def delete_silence(self, silence_id: str) -> bool:
        if not await self._redis.hexists(self._names.silences, silence_id):
            return False
        await self._write(f"silence:{silence_id}", None)
        return True

    async def put_ack(self, ack: Acknowledgement) -> None:
        await self._write(f"ack:{ack.fingerprint}", ack.model_dump_json().encode())

    async def close(self) -> None:
        await self._producer.close()


async def restore_alert_config(settings: Settings, redis: Redis) -> int:
    """Mirror the config topic into Redis (last record per key wins, older changes are skipped);
    returns how many rules, silences and acks the topic holds. Records that do not validate are
    logged and skipped."""
    names = AlertNames.from_settings(settings)
    await ensure_alert_config_topic(settings)
    latest: dict[str, tuple[bytes | None, int]] = {}
    async for message in records_to_end(settings, names.config_topic):
        record_key = (message.key or b"").decode(errors="replace")
        model = KINDS.get(record_key.partition(":")[0])
        try:
            if model is None:
                raise ValueError(f"unknown record key {record_key!r}: expected rule:, silence: or ack:")
            if message.value is not None:
                model.model_validate_json(message.value)
        except ValueError as exc:  # pydantic's ValidationError is one
            log.warning("skipping the alerting record at %s offset %d: %s", names.config_topic, message.offset, exc)
            continue
        latest[record_key] = (message.value, message.offset)
    await apply_config_changes(redis, names, [(key, value, offset) for key, (value, offset) in latest.items()])
    return sum(1 for value, _ in latest.values() if value is not None)


async def read_active(redis: Redis, names: AlertNames) -> dict[str, dict[str, Any]]:
    """The alerts pending or firing now, by fingerprint."""
    raw: dict[bytes, bytes] = await redis.hgetall(names.active)  # type: ignore[assignment]
    return {key.decode(): orjson.loads(value) for key, value in raw.items()}


async def read_history(
    redis: Redis,
    names: AlertNames,
    *,
    count: int,
    before: str | None = None,
    keep: Callable[[dict[str, Any]], bool] | None = None,
    scan_limit: int | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The newest history entries (state changes, notifications sent or failed), newest first, and
    where to go on from (the ``before`` of the next page; None: the history has no older entries).

    With ``keep``, the newest ``count`` entries it keeps: older entries are read a page at a time
    until there are ``count`` of them, the history ends, or ``scan_limit`` (default
    ``HISTORY_SCAN_LIMIT``) entries were read, so that a caller who sees few of them does not make
    one request read the whole history: then the answer is shorter and says where it stopped.
    """
    scan_limit = HISTORY_SCAN_LIMIT if scan_limit is None else scan_limit
    out: list[dict[str, Any]] = []
    newest = f"({before}" if before else "+"
    page_size = count if keep is None else max(count, HISTORY_PAGE)
    scanned = 0
    while True:
        entries: list[tuple[Any, dict[bytes, bytes]]] = await redis.xrevrange(  # type: ignore[assignment]
            names.history, max=newest, min="-", count=page_size
        )
        for entry_id, fields in entries:
            item = orjson.loads(fields[b"data"])
            item["id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            scanned += 1
            if keep is None or keep(item):
                out.append(item)
                if len(out) == count:
                    return out, item["id"]
            if scanned >= scan_limit:
                return out, item["id"]
        if len(entries) < page_size:
            return out, None
        newest = f"({item['id']}"
