"""The alerting configuration: the YAML file (rules, route tree, receivers) and the rules, silences
and acknowledgements written over the API into the Redis hashes named in ``services.topics.AlertNames``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError
from redis.asyncio import Redis

from alerts.errors import ConfigError
from services.schemas.alerts import Acknowledgement, AlertsConfig, Rule, Silence
from services.topics import AlertNames

log = logging.getLogger(__name__)


def parse_config(data: Any, *, source: str = "configuration") -> AlertsConfig:
    """An AlertsConfig from parsed YAML/JSON data, or ConfigError saying what is wrong where."""
    if data is None:
        return AlertsConfig()
    try:
        return AlertsConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid alerting {source}:\n{exc}") from None


def load_config(path: str | Path) -> AlertsConfig:
    """Read the YAML file of rules, route and receivers (docs/alerts.md)."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the alerting configuration {file}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}") from None
    return parse_config(data, source=f"file {file}")


def merge_rules(config: AlertsConfig, api_rules: Mapping[str, Rule]) -> AlertsConfig:
    """The file's rules plus the API's; on an id in both, the file's rule wins (it is reviewed code)."""
    ids = {rule.id for rule in config.rules}
    extra = [rule for rule_id, rule in sorted(api_rules.items()) if rule_id not in ids]
    for rule_id in sorted(set(api_rules) & ids):
        log.warning("rule %r is defined in the file and over the API; the file's is used", rule_id)
    return config.model_copy(update={"rules": (*config.rules, *extra)})


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
    """Create or replace an API rule (what the API's CRUD does; the worker sees it at its next tick)."""
    await redis.hset(names.rules, rule.id, rule.model_dump_json(by_alias=True))


async def put_silence(redis: Redis, names: AlertNames, silence: Silence) -> None:
    await redis.hset(names.silences, silence.id, silence.model_dump_json())


async def put_ack(redis: Redis, names: AlertNames, ack: Acknowledgement) -> None:
    await redis.hset(names.acks, ack.fingerprint, ack.model_dump_json())
