"""The alerting configuration: the YAML file (rules, route tree, receivers) and the rules, silences
and acknowledgements written over the API into the Redis hashes named in ``services.topics.AlertNames``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from alerts.errors import ConfigError
from services.schemas.alerts import AlertsConfig, Rule

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
