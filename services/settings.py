"""One settings object for every CRM Pulse process, built once at the entry point.

Sources, highest priority first: explicit keyword arguments, environment variables
(prefix ``CRM_PULSE_``, nested with ``__``, e.g. ``CRM_PULSE_KAFKA__BOOTSTRAP_SERVERS``),
a TOML file named by ``CRM_PULSE_CONFIG``, then the defaults below, which run the
local demo out of the box. ``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL`` are honoured
as short aliases, so the product can point at existing servers without the prefix.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "CRM_PULSE_"
CONFIG_FILE_ENV = "CRM_PULSE_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:19092"
    events_topic: str = "crm.events"
    dlq_topic: str = "crm.events.dlq"
    updates_topic: str = "kpi.updates"
    quotas_topic: str = Field("crm.quotas", description="compacted log of quota changes (key manager_id|YYYY-MM)")
    reports_topic: str = Field("crm.reports", description="compacted log of saved reports (key: report id)")
    partitions: int = Field(4, ge=1, description="partitions of crm.events (and of the worker's topics)")
    consumer_group: str = "crm-pulse-worker"


class MembershipSettings(_Section):
    """How the product's consumer-group members join (stream worker, archive sink, alerts senders): issue 19."""

    static: bool = Field(
        True,
        description="join as static members (Kafka group.instance.id, one per process slot on a host): a SIGKILLed "
        "process's replacement takes its partitions back at once instead of after the session timeout",
    )
    session_timeout_s: float = Field(
        20.0,
        ge=6,
        le=1800,
        description="consumer group session timeout: a member gone for good (not restarted in its slot) has its "
        "partitions moved to the others after this",
    )
    heartbeat_s: float = Field(2.0, gt=0, description="consumer group heartbeat interval (under a third of the above)")


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:16379/0"
    key_prefix: str = Field("crmp", description="prefix of every Redis key and channel of this deployment")


class DatabaseSettings(_Section):
    """The event and deal archive (PostgreSQL): see docs/archive.md."""

    url: str = Field(
        "postgresql://crm_pulse@127.0.0.1:15432/crm_pulse",
        description="libpq URL of the archive database (the local one of 'crm-pulse infra up' by default)",
    )
    archive_group: str = Field("crm-pulse-archive", description="consumer group of the archive sink on crm.events")
    batch_size: int = Field(5000, ge=1, description="records the archive sink writes per transaction at most")
    batch_within_s: float = Field(0.2, gt=0, description="longest wait to fill an archive batch")


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1)
    ingest_max_events: int = Field(10_000, ge=1, description="most events accepted by one POST /api/v1/events")
    ingest_max_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest accepted ingest request body")
    kafka_timeout_s: float = Field(10.0, gt=0, description="how long ingest waits for Kafka before answering 503")
    ws_heartbeat_s: float = Field(15.0, gt=0, description="interval of the WebSocket server heartbeat (ping)")
    ws_client_queue: int = Field(
        10_000, ge=1, description="messages queued per WebSocket client; one that falls further behind is dropped"
    )
    ws_tick_s: float = Field(
        0.1, ge=0, description="the live fan-out runs at most once per tick; changes within one are coalesced"
    )
    ws_token_recheck_s: float = Field(
        5.0,
        gt=0,
        description="how often the tokens of open WebSocket connections are checked again; a connection "
        "whose token was revoked is closed (4401) within about this long",
    )
    auth: Literal["tokens", "off"] = Field(
        "tokens",
        description="'tokens': every data path needs an API token (docs/access.md); 'off': no checks, "
        "every caller is an admin (local development only)",
    )


class FunnelStage(_Section):
    name: str
    probability: Decimal = Field(ge=0, le=1, description="win probability used by the forecast")


def _default_funnel() -> tuple[FunnelStage, ...]:
    return (
        FunnelStage(name="new", probability=Decimal("0.1")),
        FunnelStage(name="qualified", probability=Decimal("0.25")),
        FunnelStage(name="proposal", probability=Decimal("0.5")),
        FunnelStage(name="negotiation", probability=Decimal("0.75")),
    )


class BusinessSettings(_Section):
    timezone: str = Field("UTC", description="IANA zone that day/week/month buckets follow")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$", description="reporting currency (ISO 4217)")
    funnel: tuple[FunnelStage, ...] = Field(default_factory=_default_funnel)
    history_retention_days: int = Field(730, ge=1)
    future_tolerance_hours: int = Field(24, ge=0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}: use an IANA name like 'Europe/Berlin'") from exc
        return value

    @model_validator(mode="after")
    def _funnel_is_sane(self) -> BusinessSettings:
        names = [stage.name for stage in self.funnel]
        if not names:
            raise ValueError("the funnel needs at least one open stage")
        if len(set(names)) != len(names):
            raise ValueError(f"funnel stage names must be unique, got {names}")
        if {"won", "lost"} & set(names):
            raise ValueError("'won' and 'lost' are terminal and cannot be open funnel stages")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.funnel)


class WorkerSettings(_Section):
    batch_size: int = Field(1000, ge=1, description="events taken per batch by the stream worker")
    batch_within_s: float = Field(0.05, gt=0, description="longest wait to fill a batch")
    web_port: int = Field(6066, description="faust web port (each worker needs its own)")
    deal_cache_size: int = Field(200_000, ge=0)
    batch_process: bool = Field(
        True,
        description="apply batches in a child process (streams/batch_child.py) while faust keeps fetching; "
        "false = in the worker process",
    )
    batches_in_flight: int = Field(
        4, ge=1, description="batches handed to the batch process and not yet applied (waiting ones share a commit)"
    )
    instance_id: str | None = Field(
        None,
        description="static group member id of this worker (Kafka group.instance.id) when membership.static is on; "
        "default '<consumer group>-<host>-<slot>', the lowest slot free on this host (services/membership.py)",
    )


def minimum_month_months(history_retention_days: int, day_margin_days: int) -> int:
    """The fewest local months to keep so that no acceptable event's month bucket ever expires.

    The oldest acceptable event is ``history_retention_days`` before the watermark (plus the day
    margin, for a watermark that moved on during a batch); the k - 1 whole months before the
    watermark's month span at least 30 (k - 1) - 3 days, so k - 1 >= (days + 3) / 30 suffices.
    """
    days = history_retention_days + day_margin_days
    return -(-(days + 3) // 30) + 1


class RetentionSettings(_Section):
    """How much event time (behind the watermark) the state keeps; see services/kpis/retention.py."""

    day_margin_days: int = Field(
        7, ge=0, description="local-day buckets are kept for business.history_retention_days plus this"
    )
    month_months: int = Field(26, ge=2, description="local-month buckets kept, the watermark's month included")
    utcday_days: int = Field(62, ge=1, description="UTC-day buckets (rolling windows) kept")
    hour_days: int = Field(62, ge=1, description="hour buckets (rolling windows) kept")
    minute_days: int = Field(62, ge=1, description="minute buckets (rolling windows) kept")
    deal_margin_days: int = Field(
        7, ge=0, description="histories of deals not in the open pipeline: history retention plus this"
    )
    sweep_interval_s: float = Field(60.0, gt=0, description="how often a worker tries to sweep expired state")
    sweep_lock_s: float = Field(120.0, gt=0, description="expiry of the sweeper lock (renewed while sweeping)")
    sweep_batch: int = Field(1000, ge=1, description="keys deleted per atomic sweep step")


class AlertsSettings(_Section):
    """The alerts worker (``python -m alerts.worker``); rules, routes and receivers live in ``config_file``."""

    config_file: str = Field("", description="YAML file of rules, route tree and receivers (docs/alerts.md); '' = none")
    outbox_topic: str = Field("alerts.outbox", description="durable outbox: one record per notification to send")
    consumer_group: str = Field("crm-pulse-alerts", description="prefix of the alerts consumer groups")
    evaluation_interval_s: float = Field(
        1.0, gt=0, description="how often pending periods, active hours and groups are checked"
    )
    deal_evaluation_interval_s: float = Field(
        30.0, gt=0, description="how often deal rules read the open-deal indexes (a deal ages in days)"
    )
    config_topic: str = Field(
        "alerts.config", description="compacted topic of the rules, silences and acks written over the API"
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, description="Prometheus metrics of the alerts worker (0 = off)")
    retry_initial_s: float = Field(0.5, gt=0, description="first back-off of a failed send (doubles each time)")
    retry_max_s: float = Field(60.0, gt=0, description="longest back-off between two attempts of a send")
    send_timeout_s: float = Field(10.0, gt=0, description="how long one attempt to reach a receiver may take")
    sent_ttl_days: int = Field(14, ge=1, description="how long the ids of sent notifications are kept (dedupe)")
    history_maxlen: int = Field(100_000, ge=100, description="entries kept in the alert history stream (approx.)")


class MetricsSettings(_Section):
    """The business gauges on the API's /metrics (docs/operations.md lists every metric)."""

    kpi_gauges: bool = Field(True, description="expose the KPIs of the company and each team on /metrics")
    kpi_cache_s: float = Field(
        10.0, ge=0, description="scrapes within this long of a KPI read share it (0 = read on every scrape)"
    )
    kpi_managers: bool = Field(False, description="also expose each manager's KPIs (one series set per manager)")
    kpi_manager_limit: int = Field(
        200, ge=0, description="most managers exposed (sorted by id; the rest are counted as omitted)"
    )
    worker_port: int = Field(
        0,
        ge=0,
        description="Prometheus port of the stream worker's own metrics (0 = off; each worker needs its own)",
    )
    worker_host: str = "127.0.0.1"


class LocalInfraSettings(_Section):
    data_dir: Path = Field(
        Path(".local"),
        description="where the local Kafka, Redis and PostgreSQL keep data and logs (relative: to the project root)",
    )
    cache_dir: Path = Field(
        Path(".cache"), description="where fetched Kafka jars are kept between runs (relative: to the project root)"
    )
    kafka_version: str = "4.1.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap: str = Field(
        "768m", pattern=r"^[0-9]+[kKmMgG]?$", description="JVM heap of the local broker (-Xms/-Xmx)"
    )
    redis_port: int = 16379
    postgres_port: int = 15432
    postgres_bin: Path = Field(
        Path("/usr/lib/postgresql/15/bin"), description="where initdb and postgres are (Debian's postgresql-15)"
    )
    start_timeout_s: float = Field(90.0, gt=0, description="how long to wait for a local server to become ready")


class Settings(BaseSettings):
    """Every setting of CRM Pulse; see README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    membership: MembershipSettings = Field(default_factory=MembershipSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    business: BusinessSettings = Field(default_factory=BusinessSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    local: LocalInfraSettings = Field(default_factory=LocalInfraSettings)

    @model_validator(mode="after")
    def _months_cover_history(self) -> Settings:
        # Month buckets must outlive every event the too_old check still accepts.
        needed = minimum_month_months(self.business.history_retention_days, self.retention.day_margin_days)
        if self.retention.month_months < needed:
            raise ValueError(
                f"retention.month_months = {self.retention.month_months} does not cover "
                f"business.history_retention_days = {self.business.history_retention_days} "
                f"(+ retention.day_margin_days = {self.retention.day_margin_days}): keep at least {needed} months"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    def to_environment(self) -> dict[str, str]:
        """Every setting as ``CRM_PULSE_SECTION__FIELD`` variables, so a child process builds the same settings."""
        env: dict[str, str] = {}
        for section, values in self.model_dump(mode="json").items():
            for name, value in values.items():
                if value is None:
                    continue  # unset (the field's default is None): "null" would read back as the text "null"
                text = value if isinstance(value, str) else json.dumps(value)
                env[f"{ENV_PREFIX}{section.upper()}__{name.upper()}"] = text
        return env

    def with_overrides(self, **sections: dict[str, Any]) -> Settings:
        """A copy with some fields of some sections replaced (validated again)."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section] = {**data[section], **values}
        return Settings(**data)


_ALIASES = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka__bootstrap_servers",
    "REDIS_URL": "redis__url",
    "DATABASE_URL": "database__url",
}


def externally_provided() -> dict[str, bool]:
    """Which servers the environment points at (so local ones must not be started)."""
    return {
        "kafka": bool(
            os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get(f"{ENV_PREFIX}KAFKA__BOOTSTRAP_SERVERS")
        ),
        "redis": bool(os.environ.get("REDIS_URL") or os.environ.get(f"{ENV_PREFIX}REDIS__URL")),
        "postgres": bool(os.environ.get("DATABASE_URL") or os.environ.get(f"{ENV_PREFIX}DATABASE__URL")),
    }


def load_settings(**overrides: Any) -> Settings:
    """Build the settings for a process entry point: env, config file, aliases, defaults."""
    nested: dict[str, dict[str, Any]] = {}
    for alias, target in _ALIASES.items():
        prefixed = ENV_PREFIX + target.upper()
        if os.environ.get(alias) and not os.environ.get(prefixed):
            section, field = target.split("__")
            nested.setdefault(section, {})[field] = os.environ[alias]
    if not nested:
        return Settings(**overrides)
    env_built = Settings(**overrides)
    return env_built.with_overrides(**nested)
