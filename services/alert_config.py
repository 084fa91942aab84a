"""Alert rules, silences and acknowledgements written over the API, and the alerts read back.

Shared by the dashboard API (which writes them) and the alerts worker (which reads them at
every evaluation tick), through the Redis keys of :class:`services.topics.AlertNames`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis

from services.schemas.alerts import Acknowledgement, Rule, Silence
from services.topics import AlertNames

log = logging.getLogger(__name__)


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


async def put_rule(redis: Redis, names: AlertNames, rule: Rule) -> None:
    """Create or replace an API rule (the worker sees it at its next tick)."""
    await redis.hset(names.rules, rule.id, rule.model_dump_json(by_alias=True))


async def delete_rule(redis: Redis, names: AlertNames, rule_id: str) -> bool:
    return bool(await redis.hdel(names.rules, rule_id))


async def put_silence(redis: Redis, names: AlertNames, silence: Silence) -> None:
    await redis.hset(names.silences, silence.id, silence.model_dump_json())


async def delete_silence(redis: Redis, names: AlertNames, silence_id: str) -> bool:
    return bool(await redis.hdel(names.silences, silence_id))


async def put_ack(redis: Redis, names: AlertNames, ack: Acknowledgement) -> None:
    await redis.hset(names.acks, ack.fingerprint, ack.model_dump_json())


async def read_active(redis: Redis, names: AlertNames) -> dict[str, dict[str, Any]]:
    """The alerts pending or firing now, by fingerprint."""
    raw: dict[bytes, bytes] = await redis.hgetall(names.active)  # type: ignore[assignment]
    return {key.decode(): orjson.loads(value) for key, value in raw.items()}


async def read_history(
    redis: Redis, names: AlertNames, *, count: int, before: str | None = None
) -> list[dict[str, Any]]:
    """The newest history entries (state changes, notifications sent or failed), newest first."""
    entries: list[tuple[Any, dict[bytes, bytes]]] = await redis.xrevrange(  # type: ignore[assignment]
        names.history, max=f"({before}" if before else "+", min="-", count=count
    )
    out: list[dict[str, Any]] = []
    for entry_id, fields in entries:
        item = orjson.loads(fields[b"data"])
        item["id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        out.append(item)
    return out
