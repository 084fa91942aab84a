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

from alerts.conditions import breaches, compared_value, measured_value, month_value, pipeline_value
from alerts.deals import DealFacts, Index, deal_labels, deal_of_scope, deal_scope, deal_value, index_cutoffs, watches
from alerts.routing import Group, add_alert, flush, options_for
from alerts.series import fingerprint, render, selects, series_key, series_labels
from alerts.state import Observation, SeriesState, Transition, step
from services.kpis.display import format_kpi_value
from services.kpis.periods import PeriodKind, local_date, period_of
from services.schemas.alerts import Acknowledgement, Alert, AlertsConfig, Notification, Rule, Silence, kpi_kind

BucketRef = tuple[str, str, str]
"""(scope, granularity, bucket); current state is (scope, "current", "")"""
CURRENT = "current"
"""The granularity of current-state (open pipeline) records on kpi.updates, and the bucket of its series."""


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
    deal: DealFacts | None = None
    """Deal rules: the deal as last read (None once it left the open pipeline)."""
    labels: dict[str, str] | None = None
    """Deal rules: the labels of the alert while pending or firing (a deal that moves keeps its alert's identity)."""


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


def _iso(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat()


class Evaluator:
    """The alerting state of one deployment, advanced by updates and ticks."""

    def __init__(
        self,
        zone: ZoneInfo,
        *,
        series: Mapping[str, SeriesRecord] | None = None,
        groups: Mapping[str, Group] | None = None,
        probabilities: Mapping[str, Decimal] | None = None,
        currency: str = "USD",
    ) -> None:
        self.zone = zone
        self.currency = currency
        """The reporting currency: money values in messages are shown in it."""
        self.probabilities: dict[str, Decimal] = dict(probabilities or {})
        """Win probability per funnel stage (weighted pipeline, forecast)."""
        self.quotas: dict[str, int | None] = {}
        """Scope -> its quota of the current month (money units), set by the worker for quota rules."""
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
        forecasts = any(rule.kpi == "forecast" for rule in self.rules.values())
        month = current_bucket("month", now, self.zone)
        for update in updates:
            if update.granularity in change_periods:
                needed.add((update.scope, update.granularity, previous_bucket(update.granularity, update.bucket)))
            if forecasts and update.granularity == "month":
                needed.add((update.scope, CURRENT, ""))
            if forecasts and update.granularity == CURRENT:
                needed.add((update.scope, "month", month))
        for record in self.series.values():
            rule = self.rules.get(record.rule_id)
            if rule is None:
                continue
            kind = kpi_kind(rule.kpi)
            if kind == "deal":
                continue
            if kind != "period":
                needed |= self._inputs(rule, record.scope, now)
                continue
            bucket = current_bucket(rule.period, now, self.zone)
            if record.bucket != bucket:
                needed.add((record.scope, rule.period, bucket))
                if rule.condition.compare != "value":
                    needed.add((record.scope, rule.period, previous_bucket(rule.period, bucket)))
        return needed

    def quota_scopes(self, updates: Iterable[KpiUpdate]) -> set[str]:
        """Scopes whose quota of the current month the quota rules need (``self.quotas``)."""
        quota_rules = [rule for rule in self.rules.values() if rule.kpi in ("quota", "quota_attainment")]
        if not quota_rules:
            return set()
        scopes = {record.scope for record in self.series.values() if record.rule_id in {r.id for r in quota_rules}}
        return scopes | {update.scope for update in updates if update.granularity == "month"}

    def deal_queries(self, now: datetime) -> dict[Index, datetime]:
        """Per deal index, the latest score of a deal some deal rule could breach with (read those)."""
        return index_cutoffs(self.rules.values(), now)

    def deal_series_ids(self) -> set[str]:
        """The deals that have a series: read them too, to see them move or close."""
        return {deal_id for record in self.series.values() if (deal_id := deal_of_scope(record.scope)) is not None}

    def _inputs(self, rule: Rule, scope: str, now: datetime) -> set[BucketRef]:
        """The buckets a pipeline or month KPI of a scope is computed from now."""
        needed: set[BucketRef] = set()
        if rule.kpi == "forecast" or kpi_kind(rule.kpi) == "pipeline":
            needed.add((scope, CURRENT, ""))
        if kpi_kind(rule.kpi) == "month":
            needed.add((scope, "month", current_bucket("month", now, self.zone)))
        return needed

    def _bucket(self, rule: Rule, now: datetime) -> str:
        """The bucket a series of the rule watches now (current state has one)."""
        return CURRENT if kpi_kind(rule.kpi) == "pipeline" else current_bucket(rule.period, now, self.zone)

    # -- evaluation --

    def apply_update(
        self,
        update: KpiUpdate,
        now: datetime,
        measures: Mapping[BucketRef, Mapping[str, int]],
        team_members: Mapping[str, frozenset[str]],
    ) -> None:
        """Evaluate the rules that watch this update's scope and period, if it is of the current period
        (or of the current state: pipeline KPIs and the forecast)."""
        if update.granularity == CURRENT:
            pass
        elif update.granularity not in ("day", "month"):
            return
        elif update.bucket != current_bucket(update.granularity, now, self.zone):
            return  # a late change to a past period: alerts watch the current one
        inputs = {**measures, (update.scope, update.granularity, update.bucket): update.measures}
        for rule in self.rules.values():
            kind = kpi_kind(rule.kpi)
            if kind == "deal" or not selects(rule.scope, update.scope, team_members):
                continue
            if update.granularity == CURRENT:
                if not (kind == "pipeline" or rule.kpi == "forecast"):
                    continue
            elif kind == "pipeline" or rule.period != update.granularity:
                continue
            bucket = self._bucket(rule, now)
            key = series_key(rule.id, update.scope)
            record = self.series.get(key)
            # Delivered again (at least once): already applied. A forecast reads two records of one
            # change (month and current state, same seq): it takes both.
            if record is not None and record.bucket == bucket:
                seen = seq_order(update.seq), seq_order(record.seq)
                if seen[0] < seen[1] or (seen[0] == seen[1] and rule.kpi != "forecast"):
                    continue
            value = self._value(rule, update.scope, bucket, inputs)
            base = record or SeriesRecord(rule_id=rule.id, scope=update.scope, bucket=bucket)
            self._observe(rule, base.model_copy(update={"bucket": bucket, "seq": update.seq}), value, now)

    def apply_deals(
        self, now: datetime, deals: Mapping[str, DealFacts | None], team_members: Mapping[str, frozenset[str]]
    ) -> None:
        """Evaluate the deal rules on the deals read from the open-deal indexes (None: no longer open).

        ``deals`` holds every deal some rule could breach with (``deal_queries``) and every deal with a
        series (``deal_series_ids``). A deal a rule no longer watches (closed, or moved out of its
        stages or scope) has no value for it: its alert resolves.
        """
        del team_members  # deal rules select by the deal's own team (docs/alerts.md)
        for rule in self.rules.values():
            if kpi_kind(rule.kpi) != "deal":
                continue
            for deal_id, facts in sorted(deals.items()):
                key = series_key(rule.id, deal_scope(deal_id))
                record = self.series.get(key)
                watched = facts is not None and watches(rule, facts)
                value = deal_value(rule, facts, now) if facts is not None and watched else None
                if record is None and (value is None or not breaches(rule.condition, value)):
                    continue  # a young deal: no series until it breaches
                base = record or SeriesRecord(rule_id=rule.id, scope=deal_scope(deal_id), bucket="")
                self._observe(rule, base.model_copy(update={"deal": facts if watched else None}), value, now)
                if self.series[key].state.status in ("ok", "resolved"):
                    # Nothing pending or firing: forget the deal until it breaches again (closed deals go).
                    del self.series[key]
                    self.changes.series[key] = None

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
            kind = kpi_kind(rule.kpi)
            if kind == "deal":
                value = deal_value(rule, record.deal, now) if record.deal is not None else None
                self._observe(rule, record, value, now)
                continue
            bucket = self._bucket(rule, now)
            if record.bucket == bucket and kind == "period":
                value = record.state.value
                updated = record
            else:
                # Pipeline and month KPIs are computed again: a quota, or the other input, may have moved.
                value = self._value(rule, record.scope, bucket, measures)
                same = record.bucket == bucket
                updated = record if same else record.model_copy(update={"bucket": bucket, "seq": None})
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

    def _value(
        self, rule: Rule, scope: str, bucket: str, measures: Mapping[BucketRef, Mapping[str, int]]
    ) -> Decimal | None:
        """The compared value of a rule's series in a bucket, from the measures at hand."""
        kind = kpi_kind(rule.kpi)
        current_state = measures.get((scope, CURRENT, ""), {})
        if kind == "pipeline":
            return pipeline_value(rule.kpi, current_state, self.probabilities)
        if kind == "month":
            month = measures.get((scope, "month", bucket), {})
            return month_value(rule.kpi, month, current_state, self.quotas.get(scope), self.probabilities)
        now_value = measured_value(rule.kpi, measures.get((scope, rule.period, bucket), {}))
        if rule.condition.compare == "value":
            return compared_value(rule.condition, now_value, None)
        previous = measures.get((scope, rule.period, previous_bucket(rule.period, bucket)), {})
        return compared_value(rule.condition, now_value, measured_value(rule.kpi, previous))

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
            labels = self._labels(rule, after)
            fp = self._record_transition(rule, record.scope, labels, before, state, transition, now)
            episode = labels if after.deal is not None and state.status in ("pending", "firing") else None
            self.series[key] = self.changes.series[key] = after.model_copy(
                update={"fingerprint": fp, "labels": episode}
            )

    @staticmethod
    def _labels(rule: Rule, record: SeriesRecord) -> dict[str, str]:
        """The labels of the series' alert: a deal alert keeps those it began with until it ends."""
        if record.labels is not None:
            return record.labels
        if deal_of_scope(record.scope) is not None:
            if record.deal is not None:
                return deal_labels(rule, record.deal)
            return {"alertname": rule.name, "rule_id": rule.id, "scope": record.scope, "scope_kind": "deal"}
        return series_labels(rule, record.scope)

    def _record_transition(
        self,
        rule: Rule,
        scope: str,
        labels: dict[str, str],
        before: SeriesState,
        state: SeriesState,
        transition: Transition,
        now: datetime,
    ) -> str:
        """Record a transition (history, active alerts, groups); the alert's fingerprint."""
        fp = fingerprint(labels)
        value_text = _text(transition.value)
        threshold = rule.condition.threshold
        recovery = rule.condition.recovery_threshold or threshold

        def shown(value: Decimal | None) -> str:
            return format_kpi_value(rule.kpi, value, self.currency, compare=rule.condition.compare)

        # Messages read like the wall ("14%", "$12,501", "2,019"); the exact values stay in the record.
        fields = {
            "alertname": rule.name,
            "rule_id": rule.id,
            "kpi": rule.kpi,
            "scope": scope,
            "scope_kind": labels["scope_kind"],
            "scope_id": labels.get("deal_id") or labels.get(labels["scope_kind"], "all"),
            "deal_id": labels.get("deal_id", ""),
            "stage": labels.get("stage", ""),
            "manager": labels.get("manager", ""),
            "team": labels.get("team", ""),
            "period": rule.period,
            "value": shown(transition.value),
            "threshold": shown(threshold),
            "recovery_threshold": shown(recovery),
            "value_raw": value_text,
            "threshold_raw": format(threshold, "f"),
            "recovery_threshold_raw": _text(recovery),
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
                # What a ticker shows without looking the rule up (it may have changed or gone since).
                "rule_name": rule.name,
                "severity": rule.severity,
                "kpi": rule.kpi,
                "op": rule.condition.op,
                "threshold": fields["threshold_raw"],
                "recovery_threshold": fields["recovery_threshold_raw"],
                "compare": rule.condition.compare,
                "message": annotations["summary"],
                "starts_at": _iso(state.active_at or before.active_at),
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
