"""Alerting models shared by the alerts worker and the dashboard API: rules, routes, receivers,
silences, acknowledgements, alerts and notifications (Prometheus Alertmanager vocabulary).

They live in ``services`` because both ``alerts`` (which evaluates them) and ``dashboard_api``
(which edits rules, silences and acknowledgements) read them, and neither imports the other.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator

from services.topics import ScopeKind

# -- durations ---------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$"
)


def parse_duration(value: Any) -> Any:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` or a number of seconds -> timedelta."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        if value.lstrip("-").startswith("P"):
            return value  # ISO 8601 (what the models serialise to): pydantic reads it
        match = _DURATION.match(value)
        if match and any(match.groups()):
            days, hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        try:
            return timedelta(seconds=float(value))
        except ValueError:
            raise ValueError(f"{value!r} is not a duration: write it like 30s, 5m, 1h30m or 2d") from None
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# -- rules -------------------------------------------------------------------------------------

SCALAR_KPIS = (
    "calls",
    "meetings",
    "proposals",
    "call_duration_s",
    "deals_created",
    "deals_won",
    "deals_lost",
    "revenue",
    "avg_deal_size",
    "win_rate",
    "avg_cycle_days",
    "repeat_deals",
    "repeat_revenue",
    "new_customers",
)
"""KPIs of CONTRACT section 3 a rule can watch by name."""
FAMILY_KPIS = ("stage_entries", "lost_by_reason")
"""KPIs keyed by a name, watched as ``stage_entries.qualified`` or ``lost_by_reason.price``."""
SOURCE_KPIS = ("deals_created", "deals_won", "revenue", "win_share")
"""Per lead source, watched as ``by_source.<source>.<kpi>``."""
PIPELINE_KPIS = ("open_deals", "open_pipeline", "weighted_pipeline")
"""Current state, not a period: the scope's open deals, their amount, the sum of amount x stage probability;
``open_deals.<stage>`` and ``open_pipeline.<stage>`` watch one stage."""
MONTH_KPIS = ("quota", "quota_attainment", "forecast")
"""Of the current month only (``period: month``): the quota, revenue / quota, revenue + weighted pipeline."""
DEAL_KPIS = ("deal.days_in_stage", "deal.days_idle")
"""Deal rules, one series per open deal: days since it entered its stage, days since its latest event or
activity (a call, meeting or proposal carrying its deal_id)."""

Operator = Literal[">", ">=", "<", "<=", "crosses_above", "crosses_below"]
Compare = Literal["value", "change", "change_pct"]
Severity = Literal["info", "warning", "critical"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RulePeriod = Literal["day", "month"]


def check_kpi(name: str) -> str:
    """A KPI path a rule may watch, or ValueError naming the choices."""
    parts = name.split(".")
    if len(parts) == 1 and name in (*SCALAR_KPIS, *PIPELINE_KPIS, *MONTH_KPIS):
        return name
    if name in DEAL_KPIS:
        return name
    if len(parts) == 2 and parts[0] in ("open_deals", "open_pipeline") and parts[1]:
        return name
    if len(parts) == 2 and parts[0] in FAMILY_KPIS and parts[1]:
        return name
    if len(parts) == 3 and parts[0] == "by_source" and parts[1] and parts[2] in SOURCE_KPIS:
        return name
    raise ValueError(
        f"unknown KPI {name!r}: use one of {', '.join((*SCALAR_KPIS, *PIPELINE_KPIS, *MONTH_KPIS, *DEAL_KPIS))}, "
        f"{' or '.join(f'{family}.<name>' for family in FAMILY_KPIS)}, open_deals.<stage>, open_pipeline.<stage>, "
        f"or by_source.<source>.<{'|'.join(SOURCE_KPIS)}>"
    )


def kpi_kind(name: str) -> Literal["period", "pipeline", "month", "deal"]:
    """What a rule's KPI is computed from: period buckets, current state, the month (with quota or
    pipeline), or one open deal's clock."""
    if name in DEAL_KPIS:
        return "deal"
    if name in MONTH_KPIS:
        return "month"
    if name.split(".")[0] in PIPELINE_KPIS:
        return "pipeline"
    return "period"


class Condition(_Model):
    """When a series breaches, and (hysteresis) when a firing one recovers.

    ``compare`` chooses the number compared: the KPI's ``value`` in the period so far, its
    ``change`` against the whole previous period (value - previous), or ``change_pct``
    (100 x change / previous; no value when the previous is 0). A firing alert resolves when
    the same operator no longer holds against ``recovery_threshold`` (default: the threshold),
    so ``> 100`` with recovery ``90`` fires above 100 and resolves at 90 or below.
    ``crosses_above``/``crosses_below`` are ``>``/``<`` that fire only after the series was seen
    on the other side of the threshold: an edge, not a level.
    """

    op: Operator
    threshold: Decimal
    recovery_threshold: Decimal | None = None
    compare: Compare = "value"

    @model_validator(mode="after")
    def _recovery_on_the_safe_side(self) -> Condition:
        recovery = self.recovery_threshold
        if recovery is None:
            return self
        upward = self.op in (">", ">=", "crosses_above")
        if upward and recovery > self.threshold:
            raise ValueError(f"recovery_threshold {recovery} must be <= threshold {self.threshold} for {self.op!r}")
        if not upward and recovery < self.threshold:
            raise ValueError(f"recovery_threshold {recovery} must be >= threshold {self.threshold} for {self.op!r}")
        return self


class ScopeSelector(_Model):
    """Which series a rule watches: one or some managers (``ids``), every manager of a ``team``,
    every manager (no ids), some or every team, or the company."""

    kind: ScopeKind
    ids: tuple[str, ...] = ()
    team: str | None = Field(None, description="kind manager: every manager with an event carrying this team")

    @model_validator(mode="after")
    def _coherent(self) -> ScopeSelector:
        if self.kind == "company" and (self.ids or self.team):
            raise ValueError("a company selector takes neither ids nor team")
        if self.team is not None and self.kind != "manager":
            raise ValueError("'team' selects the managers of a team: use it with kind manager")
        return self


class ActiveHours(_Model):
    """When a rule is evaluated, in the business time zone: some weekdays, [start, end) local time.
    ``end`` at or before ``start`` spans midnight (22:00-06:00); outside, the rule holds no alert."""

    days: tuple[Weekday, ...] = WEEKDAYS
    start: time = time(0, 0)
    end: time = time(0, 0)

    def contains(self, local: datetime) -> bool:
        """Whether a local wall-clock instant is within the active hours."""
        clock = local.time().replace(tzinfo=None)
        day = WEEKDAYS[local.weekday()]
        if self.start < self.end:
            return day in self.days and self.start <= clock < self.end
        if clock >= self.start:
            return day in self.days
        # After midnight of an overnight window: it belongs to the window opened the day before.
        return clock < self.end and WEEKDAYS[(local.weekday() - 1) % 7] in self.days


_RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class Rule(_Model):
    """One alerting rule: a KPI of a scope selector and a period against a condition."""

    id: str = Field(pattern=_RULE_ID)
    name: str = Field(min_length=1, max_length=200, description="the alertname label")
    kpi: str
    scope: ScopeSelector
    period: RulePeriod = "day"
    condition: Condition
    for_: Duration = Field(timedelta(0), alias="for", description="pending period before firing")
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    active_hours: ActiveHours | None = None
    summary: str = Field(
        "{alertname}: {kpi} of {scope} is {value} ({op} {threshold})",
        max_length=2000,
        description="message template; placeholders in docs/alerts.md",
    )
    description: str = Field("", max_length=10_000)
    enabled: bool = True
    stages: tuple[str, ...] = Field((), description="deal rules: only deals in these stages (none = every stage)")

    @field_validator("kpi")
    @classmethod
    def _known_kpi(cls, value: str) -> str:
        return check_kpi(value)

    @model_validator(mode="after")
    def _fits_the_kpi(self) -> Rule:
        kind = kpi_kind(self.kpi)
        if kind != "period" and self.condition.compare != "value":
            raise ValueError(f"KPI {self.kpi!r} is watched by its value: compare must be 'value'")
        if kind == "month" and self.period != "month":
            raise ValueError(f"KPI {self.kpi!r} is a month's: set period: month")
        if kind == "deal" and self.condition.op not in (">", ">="):
            raise ValueError(f"a deal rule fires when a deal is too old: use op '>' or '>=', not {self.condition.op!r}")
        if self.stages and kind != "deal":
            raise ValueError(f"'stages' filters the deals of a deal rule; KPI {self.kpi!r} is not one")
        return self

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"label name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
        return value

    @field_validator("for_")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError(f"'for' must not be negative, got {value}")
        return value


# -- routing -----------------------------------------------------------------------------------

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"?(.*?)\"?\s*$")


class Matcher(_Model):
    """A label matcher, written like Alertmanager's: ``severity="critical"``, ``team=~"north|south"``."""

    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            match = _MATCHER.match(data)
            if not match:
                raise ValueError(f'{data!r} is not a matcher: write it like severity="critical" or team=~"a|b"')
            return {"name": match.group(1), "op": match.group(2), "value": match.group(3)}
        return data

    @model_validator(mode="after")
    def _valid_regex(self) -> Matcher:
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"bad regular expression {self.value!r}: {exc}") from None
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found


class Route(_Model):
    """A node of the routing tree; unset fields are inherited from the parent."""

    receiver: str | None = None
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] | None = Field(None, description="label names; ['...'] groups by every label")
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = Field(None, description="'off' (or 0) sends no repeats")
    continue_: bool = Field(False, alias="continue")
    routes: tuple[Route, ...] = ()

    @field_validator("repeat_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return timedelta(0) if value == "off" else value


# -- receivers ---------------------------------------------------------------------------------


class _Receiver(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    send_resolved: bool = True


class SlackReceiver(_Receiver):
    """A Slack incoming webhook; messages use Block Kit."""

    type: Literal["slack"] = "slack"
    webhook_url: SecretStr


class EmailReceiver(_Receiver):
    """Email over SMTP, as plain text and HTML alternatives."""

    type: Literal["email"] = "email"
    to: tuple[str, ...] = Field(min_length=1)
    from_: str = Field(alias="from")
    smtp_host: str
    smtp_port: int = 25
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False


class WebhookReceiver(_Receiver):
    """A generic JSON webhook; the body is signed with HMAC-SHA256 of ``secret``."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr


Receiver = Annotated[SlackReceiver | EmailReceiver | WebhookReceiver, Field(discriminator="type")]


class AlertsConfig(_Model):
    """A whole alerting configuration: what the YAML file holds."""

    rules: tuple[Rule, ...] = ()
    route: Route = Field(default_factory=lambda: Route(receiver=None))
    receivers: tuple[Receiver, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> AlertsConfig:
        ids = [rule.id for rule in self.rules]
        duplicates = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
        if duplicates:
            raise ValueError(f"rule ids must be unique; repeated: {duplicates}")
        names = [receiver.name for receiver in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError(f"receiver names must be unique, got {names}")
        for receiver in _route_receivers(self.route):
            if receiver not in names:
                raise ValueError(f"route names receiver {receiver!r}, which is not among the receivers {names}")
        if self.receivers and self.route.receiver is None:
            raise ValueError("the root route needs a receiver (the default for every alert)")
        return self


def _route_receivers(route: Route) -> list[str]:
    found = [route.receiver] if route.receiver else []
    for child in route.routes:
        found += _route_receivers(child)
    return found


# -- silences and acknowledgements -------------------------------------------------------------


class Silence(_Model):
    """Mutes the alerts its matchers select from ``starts_at`` to ``ends_at``. With ``fingerprint`` and
    ``episode`` (an alert's ``starts_at``), it mutes that one firing alert until it resolves."""

    id: str = Field(pattern=_RULE_ID)
    matchers: tuple[Matcher, ...] = ()
    starts_at: datetime
    ends_at: datetime | None = None
    fingerprint: str | None = None
    episode: datetime | None = None
    created_by: str = ""
    comment: str = ""

    @model_validator(mode="after")
    def _bounded(self) -> Silence:
        if self.fingerprint is None and not self.matchers:
            raise ValueError("a silence needs matchers, or a fingerprint (until resolved)")
        if self.fingerprint is None and self.ends_at is None:
            raise ValueError("a silence by matchers needs ends_at (only 'until resolved' silences are open-ended)")
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError(f"ends_at {self.ends_at} must be after starts_at {self.starts_at}")
        return self


class Acknowledgement(_Model):
    """Someone took a firing alert: its repeats stop; its resolution is still notified."""

    fingerprint: str
    episode: datetime = Field(description="the acknowledged alert's starts_at (one firing episode)")
    by: str = ""
    at: datetime
    comment: str = ""


# -- alerts and notifications ------------------------------------------------------------------

AlertStatus = Literal["firing", "resolved"]


class Alert(_Model):
    """One alert as routing and receivers see it (one series of one rule)."""

    fingerprint: str
    rule_id: str
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    status: AlertStatus
    starts_at: datetime
    ends_at: datetime | None = None
    value: str | None = None


class Notification(_Model):
    """One message to one receiver about one aggregation group: the outbox record."""

    id: str = Field(description="stable across retries and redeliveries: the dedupe key")
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    common_labels: dict[str, str]
    status: AlertStatus = Field(description="firing if any alert of it fires")
    firing: tuple[Alert, ...] = ()
    resolved: tuple[Alert, ...] = ()
    repeat: bool = Field(False, description="a reminder: nothing changed since the last one")
    created_at: datetime
