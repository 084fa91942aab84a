"""The wire contract between components: every Kafka topic and every Redis key and stream.

Components never talk to each other directly; they only share the names defined here.
Redis keys all start with the deployment's prefix. Scope and bucket come last in a key,
and the bucket has a fixed format, so keys parse back unambiguously from the right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.settings import Settings

ScopeKind = Literal["manager", "team", "company"]
Granularity = Literal["day", "month"]
"""Local calendar buckets (business time zone): what calendar periods and the change feed use."""
BucketGranularity = Literal["day", "month", "utcday", "hour", "minute"]
"""Every kind of KPI bucket: the local day and month, and the UTC day, hour and minute of rolling windows."""

SCOPE_CODES: dict[ScopeKind, str] = {"manager": "m", "team": "t", "company": "c"}
COMPANY_ID = "all"


@dataclass(frozen=True)
class Topics:
    """Kafka topics."""

    events: str
    dlq: str
    kpi_updates: str
    quotas: str
    """Compacted: key ``<manager_id>|<YYYY-MM>``, value the quota JSON, or a tombstone (null) for a delete."""
    reports: str
    """Compacted: key the saved report's id, value its JSON (``SavedReport``), or a tombstone for a delete."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(
            events=settings.kafka.events_topic,
            dlq=settings.kafka.dlq_topic,
            kpi_updates=settings.kafka.updates_topic,
            quotas=settings.kafka.quotas_topic,
            reports=settings.kafka.reports_topic,
        )


def scope_token(kind: ScopeKind, scope_id: str) -> str:
    """The compact scope name used inside keys and change records, e.g. ``m:alice``."""
    return f"{SCOPE_CODES[kind]}:{scope_id}" if kind != "company" else "c"


def parse_scope_token(token: str) -> tuple[ScopeKind, str]:
    """The kind and id of a scope token (``c``, ``t:<team_id>``, ``m:<manager_id>``): ``scope_token``'s inverse."""
    if token == "c":
        return "company", COMPANY_ID
    return ("team" if token.startswith("t:") else "manager"), token[2:]


@dataclass(frozen=True)
class RedisKeys:
    """Redis keys and streams of one deployment (one prefix)."""

    prefix: str

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisKeys:
        return cls(prefix=settings.redis.key_prefix)

    # -- KPI buckets: hash of additive measures (field = measure, value = integer) --
    def bucket(self, scope: str, granularity: BucketGranularity, bucket: str) -> str:
        """A bucket's hash; for ``minute``, ``bucket`` is an hour's label: the minutes of one hour share
        a hash, with fields ``MM/measure`` (``services.kpis.windows.minute_location``)."""
        return f"{self.prefix}:kpi:{granularity}:{bucket}:{scope}"

    # -- retention: time indexes of what expires, and the sweeper --
    def bucket_index(self, granularity: BucketGranularity) -> str:
        """Sorted set of the bucket keys of one granularity, scored by the bucket's end (epoch seconds)."""
        return f"{self.prefix}:idx:{granularity}"

    @property
    def deal_index(self) -> str:
        """Sorted set of the keys of deal histories not in the open pipeline, scored by their latest event."""
        return f"{self.prefix}:idx:deal"

    @property
    def open_deals_by_stage_entry(self) -> str:
        """Sorted set of open deal ids scored by when they entered their stage (epoch s): deal alert rules."""
        return f"{self.prefix}:idx:open-deal:stage"

    @property
    def open_deals_by_activity(self) -> str:
        """Sorted set of open deal ids scored by their latest event or activity (epoch s): deal alert rules."""
        return f"{self.prefix}:idx:open-deal:activity"

    @property
    def sweeper_lock(self) -> str:
        """Held (with an expiry) by the one worker sweeping expired state."""
        return f"{self.prefix}:sweeper:lock"

    @property
    def sweeper_status(self) -> str:
        """Hash describing the last sweep: when, the watermark it used, what it deleted."""
        return f"{self.prefix}:sweeper:status"

    # -- current state (open pipeline): hash of additive measures per scope --
    def current(self, scope: str) -> str:
        return f"{self.prefix}:cur:{scope}"

    # -- directory of known scopes (sets) --
    @property
    def managers(self) -> str:
        return f"{self.prefix}:dir:managers"

    @property
    def teams(self) -> str:
        return f"{self.prefix}:dir:teams"

    def team_managers(self, team_id: str) -> str:
        """Managers that had an event carrying this team id (set)."""
        return f"{self.prefix}:dir:team:{team_id}"

    def team_month_managers(self, team_id: str, month: str) -> str:
        """Managers with an event carrying this team id in this local month (set): a team's quota is theirs."""
        return f"{self.prefix}:dir:teammonth:{month}:{team_id}"

    # -- quotas (configuration mirrored from the quotas topic) --
    @property
    def saved_reports(self) -> str:
        """Saved reports (hash): report id -> the ``SavedReport`` as JSON (presets are not stored)."""
        return f"{self.prefix}:reports"

    @property
    def saved_report_offsets(self) -> str:
        """Hash report id -> offset of the reports-topic record applied last (newer wins)."""
        return f"{self.prefix}:reports:offsets"

    def quotas(self, month: str) -> str:
        """Quotas of a local month (hash): manager_id -> amount in money units (1/10,000)."""
        return f"{self.prefix}:quota:{month}"

    @property
    def quota_offsets(self) -> str:
        """Hash ``<manager_id>|<YYYY-MM>`` -> offset of the quotas-topic record applied last (newer wins)."""
        return f"{self.prefix}:quota-offsets"

    # -- worker state --
    def seen_event(self, event_id: str) -> str:
        """Present once an event_id has been accepted (dedupe)."""
        return f"{self.prefix}:seen:{event_id}"

    def deal(self, deal_id: str) -> str:
        """The deal's compact event history (JSON)."""
        return f"{self.prefix}:deal:{deal_id}"

    def customer(self, customer_id: str) -> str:
        """The customer's wins by deal (JSON), for repeat business and new customers."""
        return f"{self.prefix}:cust:{customer_id}"

    @property
    def offsets(self) -> str:
        """Hash ``topic:partition`` -> next offset to apply, written atomically with the state."""
        return f"{self.prefix}:offsets"

    @property
    def watermark(self) -> str:
        """Highest accepted ``occurred_at`` (epoch microseconds)."""
        return f"{self.prefix}:watermark"

    @property
    def worker_stats(self) -> str:
        """Hash of exact counters (processed, duplicates, rejected:<code>) kept with the state."""
        return f"{self.prefix}:stats"

    @property
    def consumer_lag(self) -> str:
        """Hash ``topic:partition`` -> records behind the end of the log, as last seen by a worker."""
        return f"{self.prefix}:lag"

    # -- change feed: Redis stream of KPI changes, entry id = sequence number --
    @property
    def changes(self) -> str:
        return f"{self.prefix}:changes"

    @property
    def relay_cursor(self) -> str:
        """Id of the last change-feed entry copied to the kpi.updates topic."""
        return f"{self.prefix}:relay:cursor"

    @property
    def relay_lease(self) -> str:
        """Which worker relays the change feed to Kafka now (expiring lease)."""
        return f"{self.prefix}:relay:lease"


@dataclass(frozen=True)
class AlertNames:
    """The alerting wire contract: its Kafka topic and Redis keys (docs/alerts.md describes each value).

    Written by the alerts worker (``python -m alerts.worker``) except where a key says otherwise;
    the dashboard API reads them (history, active alerts) and writes rules, silences and
    acknowledgements, which the worker picks up at its next evaluation.
    """

    prefix: str
    outbox_topic: str
    """Kafka: one record per notification to send; key = receiver name, value = the notification JSON."""
    config_topic: str
    """Kafka, compacted: the rules, silences and acks written over the API (key ``rule:<id>``,
    ``silence:<id>``, ``ack:<fingerprint>``; value the JSON, or a tombstone for a delete)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertNames:
        return cls(
            prefix=f"{settings.redis.key_prefix}:alerts",
            outbox_topic=settings.alerts.outbox_topic,
            config_topic=settings.alerts.config_topic,
        )

    # -- configuration written over the API (JSON values, validated by services.schemas.alerts) --
    @property
    def rules(self) -> str:
        """Hash rule id -> rule JSON: rules managed over the API (the YAML file's rules are not here)."""
        return f"{self.prefix}:rules"

    @property
    def silences(self) -> str:
        """Hash silence id -> silence JSON."""
        return f"{self.prefix}:silences"

    @property
    def acks(self) -> str:
        """Hash alert fingerprint -> acknowledgement JSON (bound to one firing episode)."""
        return f"{self.prefix}:acks"

    @property
    def config_offsets(self) -> str:
        """Hash config-topic record key -> offset of the record mirrored last (a newer one wins)."""
        return f"{self.prefix}:config-offsets"

    # -- worker state, committed atomically by the worker's script --
    @property
    def offsets(self) -> str:
        """Hash ``topic:partition`` -> next kpi.updates offset to evaluate."""
        return f"{self.prefix}:offsets"

    @property
    def series(self) -> str:
        """Hash ``rule_id|scope`` -> series state JSON (ok, pending, firing, resolved)."""
        return f"{self.prefix}:series"

    @property
    def groups(self) -> str:
        """Hash group key -> aggregation group JSON (alerts, next flush, what was notified)."""
        return f"{self.prefix}:groups"

    @property
    def active(self) -> str:
        """Hash alert fingerprint -> alert JSON of every pending or firing alert."""
        return f"{self.prefix}:active"

    @property
    def lease(self) -> str:
        """Which alerts worker evaluates now (expiring lease; a second worker waits)."""
        return f"{self.prefix}:lease"

    # -- history and the outbox --
    @property
    def history(self) -> str:
        """Stream of every state change and every notification sent or failed (field ``data``, JSON)."""
        return f"{self.prefix}:history"

    @property
    def pending_outbox(self) -> str:
        """Stream of notifications committed with the state, copied to the outbox topic by the worker."""
        return f"{self.prefix}:outbox"

    @property
    def outbox_cursor(self) -> str:
        """Id of the last pending-outbox entry copied to the outbox topic."""
        return f"{self.prefix}:outbox:cursor"

    def sent(self, receiver: str, notification_id: str) -> str:
        """Present once this notification reached this receiver (dedupe of redeliveries)."""
        return f"{self.prefix}:sent:{receiver}:{notification_id}"


@dataclass(frozen=True)
class AuthKeys:
    """Redis keys of the API tokens (``services.token_store``); never a token's plaintext.

    They live beside the state prefix (``<prefix>.auth:``), not under it: ``crm-pulse replay``
    wipes ``<prefix>:*`` to rebuild the state from Kafka, and tokens are not in Kafka.
    """

    prefix: str

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthKeys:
        return cls(prefix=f"{settings.redis.key_prefix}.auth")

    @property
    def tokens(self) -> str:
        """Hash SHA-256 of a token (hex) -> the token's record JSON (name, role, team or manager, created, revoked)."""
        return f"{self.prefix}:tokens"

    @property
    def last_used(self) -> str:
        """Hash SHA-256 of a token -> when it was last used (RFC 3339; written at most once a minute per process)."""
        return f"{self.prefix}:last-used"
