"""Rules against KPI updates and the clock: series state, alerts, groups and notifications.

No I/O: the worker hands in parsed ``kpi.updates`` records, the instant, the measures of the
buckets it was asked for (``needed_buckets``) and team memberships; the evaluator changes its
in-memory state and collects every change in ``Changes``, which the worker commits to Redis in
one atomic script (so the state, the history and the notifications to send never disagree).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel, ConfigDict

from alerts.conditions import compared_value, measured_value
from alerts.routing import Group, add_alert, flush, options_for
from alerts.series import fingerprint, render, selects, series_key, series_labels
from alerts.state import Observation, SeriesState, Transition, step
from services.kpis.periods import PeriodKind, local_date, period_of
from services.schemas.alerts import Acknowledgement, Alert, AlertsConfig, Notification, Rule, Silence

BucketRef = tuple[str, str, str]
"""(scope, granularity, bucket)"""


@dataclass(frozen=True)
class KpiUpdate:
    """One kpi.updates record: the absolute measures of a scope's bucket after a worker commit."""

    seq: str
    scope: str
    granularity: str
    bucket: str
    measures: dict[str, int]
    committed_ms: int | None = None

    @classmethod
    def parse(cls, raw: bytes) -> KpiUpdate:
        data = orjson.loads(raw)
        return cls(
            seq=str(data["seq"]),
            scope=str(data["scope"]),
            granularity=str(data["granularity"]),
            bucket=str(data.get("bucket") or ""),
            measures={str(k): int(v) for k, v in data["measures"].items()},
            committed_ms=data.get("committed_ms"),
        )


def seq_order(seq: str | None) -> tuple[int, int]:
    """Change-feed ids (``<ms>-<n>``) in their order."""
    if not seq:
        return (-1, -1)
    ms, _, n = seq.partition("-")
    return (int(ms), int(n or 0))


def current_bucket(period: str, now: datetime, zone: ZoneInfo) -> str:
    return period_of(PeriodKind(period), local_date(now, zone)).label


def previous_bucket(period: str, bucket: str) -> str:
    start = date.fromisoformat(bucket if period == "day" else f"{bucket}-01")
    return period_of(PeriodKind(period), start).previous().label


class SeriesRecord(BaseModel):
    """A series as persisted: its rule, scope, the bucket and update it last saw, its state."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    scope: str
    bucket: str
    seq: str | None = None
    state: SeriesState = SeriesState()
    fingerprint: str | None = None
    """Of the alert this series last raised (so a removed rule's alert can still be resolved)."""


@dataclass
class Changes:
    """Everything to commit after an evaluation (None = delete)."""

    series: dict[str, SeriesRecord | None] = field(default_factory=dict)
    groups: dict[str, Group | None] = field(default_factory=dict)
    active: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.series or self.groups or self.active or self.history or self.notifications)


def _text(value: Decimal | None) -> str:
    return "none" if value is None else format(value, "f")


class Evaluator:
    """The alerting state of one deployment, advanced by updates and ticks."""

    def __init__(
        self,
        zone: ZoneInfo,
        *,
        series: Mapping[str, SeriesRecord] | None = None,
        groups: Mapping[str, Group] | None = None,
    ) -> None:
        self.zone = zone
        self.series: dict[str, SeriesRecord] = dict(series or {})
        self.groups: dict[str, Group] = dict(groups or {})
        self.config = AlertsConfig()
        self.rules: dict[str, Rule] = {}
        self.silences: list[Silence] = []
        self.acks: dict[str, Acknowledgement] = {}
        self.changes = Changes()

    # -- configuration --

    def configure(
        self,
        config: AlertsConfig,
        *,
        silences: Iterable[Silence] = (),
        acks: Mapping[str, Acknowledgement] | None = None,
    ) -> None:
        self.config = config
        self.rules = {rule.id: rule for rule in config.rules if rule.enabled}
        self.silences = list(silences)
        self.acks = dict(acks or {})

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        return changes

    # -- what the worker must fetch --

    def needed_buckets(self, updates: Iterable[KpiUpdate], now: datetime) -> set[BucketRef]:
        """Buckets whose measures an evaluation needs beyond the updates: previous periods of change
        rules, and the current buckets of series whose period rolled over."""
        needed: set[BucketRef] = set()
        change_periods = {rule.period for rule in self.rules.values() if rule.condition.compare != "value"}
        for update in updates:
            if update.granularity in change_periods:
                needed.add((update.scope, update.granularity, previous_bucket(update.granularity, update.bucket)))
        for record in self.series.values():
            rule = self.rules.get(record.rule_id)
            if rule is None:
                continue
            bucket = current_bucket(rule.period, now, self.zone)
            if record.bucket != bucket:
                needed.add((record.scope, rule.period, bucket))
                if rule.condition.compare != "value":
                    needed.add((record.scope, rule.period, previous_bucket(rule.period, bucket)))
        return needed

    # -- evaluation --

    def apply_update(
        self,
        update: KpiUpdate,
        now: datetime,
        measures: Mapping[BucketRef, Mapping[str, int]],
        team_members: Mapping[str, frozenset[str]],
    ) -> None:
        """Evaluate the rules that watch this update's scope and period, if it is of the current period."""
        if update.granularity not in ("day", "month"):
            return
        if update.bucket != current_bucket(update.granularity, now, self.zone):
            return  # a late change to a past period: alerts watch the current one
        for rule in self.rules.values():
            if rule.period != update.granularity or not selects(rule.scope, update.scope, team_members):
                continue
            key = series_key(rule.id, update.scope)
            record = self.series.get(key)
            if record is not None and record.bucket == update.bucket and seq_order(update.seq) <= seq_order(record.seq):
                continue  # delivered again (at least once): already applied
            previous = measures.get((update.scope, update.granularity, previous_bucket(rule.period, update.bucket)), {})
            value = self._value(rule, update.measures, previous)
            base = record or SeriesRecord(rule_id=rule.id, scope=update.scope, bucket=update.bucket)
            self._observe(rule, base.model_copy(update={"bucket": update.bucket, "seq": update.seq}), value, now)

    def tick(
        self,
        now: datetime,
        measures: Mapping[BucketRef, Mapping[str, int]],
    ) -> None:
        """Advance time: pending periods, active hours, period roll-over, removed rules, then groups."""
        for key, record in list(self.series.items()):
            rule = self.rules.get(record.rule_id)
            if rule is None:
                self._drop(key, record, now)
                continue
            bucket = current_bucket(rule.period, now, self.zone)
            if record.bucket == bucket:
                value = record.state.value
                updated = record
            else:
                current = measures.get((record.scope, rule.period, bucket), {})
                previous = measures.get((record.scope, rule.period, previous_bucket(rule.period, bucket)), {})
                value = self._value(rule, current, previous)
                updated = record.model_copy(update={"bucket": bucket, "seq": None})
            self._observe(rule, updated, value, now)
        self.flush_groups(now)

    def flush_groups(self, now: datetime) -> None:
        receivers = {receiver.name: receiver for receiver in self.config.receivers}
        for key, group in sorted(self.groups.items()):
            if group.next_flush_at > now:
                continue
            options = options_for(self.config.route, group)
            receiver = receivers.get(group.receiver)
            if options is None or receiver is None:
                del self.groups[key]
                self.changes.groups[key] = None
                continue
            after, notification = flush(
                group, options, now, silences=self.silences, acks=self.acks, send_resolved=receiver.send_resolved
            )
            if after is None:
                del self.groups[key]
            else:
                self.groups[key] = after
            self.changes.groups[key] = after
            if notification is not None:
                self.changes.notifications.append(notification)
                self.changes.history.append(
                    {
                        "kind": "notification",
                        "outcome": "queued",
                        "at": now.isoformat(),
                        "id": notification.id,
                        "receiver": notification.receiver,
                        "status": notification.status,
                        "repeat": notification.repeat,
                        "firing": [alert.fingerprint for alert in notification.firing],
                        "resolved": [alert.fingerprint for alert in notification.resolved],
                    }
                )

    # -- internals --

    @staticmethod
    def _value(rule: Rule, current: Mapping[str, int], previous: Mapping[str, int]) -> Decimal | None:
        now_value = measured_value(rule.kpi, current)
        before = measured_value(rule.kpi, previous) if rule.condition.compare != "value" else None
        return compared_value(rule.condition, now_value, before)

    def _active(self, rule: Rule, now: datetime) -> bool:
        return rule.active_hours is None or rule.active_hours.contains(now.astimezone(self.zone))

    def _observe(self, rule: Rule, record: SeriesRecord, value: Decimal | None, now: datetime) -> None:
        key = series_key(rule.id, record.scope)
        before = record.state
        state, transition = step(
            before, Observation(value=value, at=now, active=self._active(rule, now)), rule.condition, rule.for_
        )
        after = record.model_copy(update={"state": state})
        old = self.series.get(key)
        self.series[key] = after
        if (
            old is None
            or transition is not None
            or old.bucket != after.bucket
            or old.seq != after.seq
            or old.state.value != state.value
            or old.state.armed != state.armed
        ):
            self.changes.series[key] = after
        if transition is not None:
            fp = self._record_transition(rule, record.scope, before, state, transition, now)
            self.series[key] = self.changes.series[key] = after.model_copy(update={"fingerprint": fp})

    def _record_transition(
        self, rule: Rule, scope: str, before: SeriesState, state: SeriesState, transition: Transition, now: datetime
    ) -> str:
        """Record a transition (history, active alerts, groups); the alert's fingerprint."""
        labels = series_labels(rule, scope)
        fp = fingerprint(labels)
        value_text = _text(transition.value)
        fields = {
            "alertname": rule.name,
            "rule_id": rule.id,
            "kpi": rule.kpi,
            "scope": scope,
            "scope_kind": labels["scope_kind"],
            "scope_id": labels.get(labels["scope_kind"], "all"),
            "period": rule.period,
            "value": value_text,
            "threshold": format(rule.condition.threshold, "f"),
            "recovery_threshold": _text(rule.condition.recovery_threshold or rule.condition.threshold),
            "op": rule.condition.op,
            "compare": rule.condition.compare,
            "severity": rule.severity,
            "status": state.status,
        }
        annotations = {"summary": render(rule.summary, fields, labels)}
        if rule.description:
            annotations["description"] = render(rule.description, fields, labels)
        self.changes.history.append(
            {
                "kind": "state",
                "at": transition.at.isoformat(),
                "rule_id": rule.id,
                "scope": scope,
                "fingerprint": fp,
                "from": transition.before,
                "to": transition.after,
                "reason": transition.reason,
                "value": None if transition.value is None else value_text,
                "labels": labels,
            }
        )
        if state.status in ("pending", "firing"):
            assert state.active_at is not None
            self.changes.active[fp] = {
                "fingerprint": fp,
                "rule_id": rule.id,
                "state": state.status,
                "labels": labels,
                "annotations": annotations,
                "starts_at": state.active_at.isoformat(),
                "since": transition.at.isoformat(),
                "value": value_text,
            }
        else:
            self.changes.active[fp] = None
        alert: Alert | None = None
        if state.status == "firing":
            assert state.active_at is not None
            alert = Alert(
                fingerprint=fp,
                rule_id=rule.id,
                labels=labels,
                annotations=annotations,
                status="firing",
                starts_at=state.active_at,
                value=value_text,
            )
        elif before.status == "firing" and state.status == "resolved":
            assert before.active_at is not None
            alert = Alert(
                fingerprint=fp,
                rule_id=rule.id,
                labels=labels,
                annotations=annotations,
                status="resolved",
                starts_at=before.active_at,
                ends_at=transition.at,
                value=value_text,
            )
        if alert is not None:
            self._route(alert, now)
        return fp

    def _route(self, alert: Alert, now: datetime) -> None:
        for key, group in add_alert(self.groups, self.config.route, alert, now).items():
            self.groups[key] = group
            self.changes.groups[key] = group

    def _drop(self, key: str, record: SeriesRecord, now: datetime) -> None:
        """A series whose rule was deleted or disabled: resolve what it fired, then forget it."""
        del self.series[key]
        self.changes.series[key] = None
        state = record.state
        if state.status not in ("pending", "firing"):
            return
        self.changes.history.append(
            {
                "kind": "state",
                "at": now.isoformat(),
                "rule_id": record.rule_id,
                "scope": record.scope,
                "fingerprint": record.fingerprint,
                "from": state.status,
                "to": "ok" if state.status == "pending" else "resolved",
                "reason": "rule_removed",
            }
        )
        if record.fingerprint is None:
            return
        self.changes.active[record.fingerprint] = None
        # Tell the groups that heard of it firing (the rule, and so its labels, are gone: take the group's copy).
        for group in list(self.groups.values()):
            known = group.alerts.get(record.fingerprint)
            if known is not None and known.status == "firing":
                self._route(known.model_copy(update={"status": "resolved", "ends_at": now}), now)


def utc_now() -> datetime:
    return datetime.now(UTC)
