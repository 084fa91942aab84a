"""Pure notification routing: the route tree, aggregation groups, silences, acknowledgements,
group_wait / group_interval / repeat_interval, and resolved notifications (Alertmanager's model).

An alert enters every group its routes select (the first matching child, or several with
``continue``). A new group waits ``group_wait`` before its first notification; after that it is
looked at every ``group_interval``, and a notification goes out when a firing alert is new to the
receiver, or an alert it was told about resolved (``send_resolved``), or ``repeat_interval`` passed
since the last one while an unacknowledged alert still fires. Silenced alerts are left out;
acknowledged ones fire no repeats. Resolved alerts leave the group once it was looked at.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from pydantic import BaseModel, ConfigDict, Field

from services.schemas.alerts import Acknowledgement, Alert, Matcher, Notification, Route, Silence

DEFAULT_GROUP_WAIT = timedelta(seconds=30)
DEFAULT_GROUP_INTERVAL = timedelta(minutes=5)
DEFAULT_REPEAT_INTERVAL = timedelta(hours=4)
GROUP_BY_ALL = "..."


@dataclass(frozen=True)
class RouteOptions:
    """A matched route with everything inherited filled in."""

    route_id: str
    receiver: str
    group_by: tuple[str, ...]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta | None
    """None: repeats are off."""


def _matches(matchers: Iterable[Matcher], labels: dict[str, str]) -> bool:
    return all(matcher.matches(labels) for matcher in matchers)


def match_routes(root: Route, labels: dict[str, str]) -> list[RouteOptions]:
    """The routes an alert with these labels goes to (the root when no child matches)."""
    base = RouteOptions(
        route_id="0",
        receiver=root.receiver or "",
        group_by=root.group_by or (),
        group_wait=root.group_wait if root.group_wait is not None else DEFAULT_GROUP_WAIT,
        group_interval=root.group_interval if root.group_interval is not None else DEFAULT_GROUP_INTERVAL,
        repeat_interval=_repeat(root.repeat_interval, DEFAULT_REPEAT_INTERVAL),
    )
    return _walk(root, base, labels)


def _repeat(value: timedelta | None, inherited: timedelta | None) -> timedelta | None:
    if value is None:
        return inherited
    return value if value > timedelta(0) else None


def _walk(route: Route, options: RouteOptions, labels: dict[str, str]) -> list[RouteOptions]:
    found: list[RouteOptions] = []
    for index, child in enumerate(route.routes):
        if not _matches(child.matchers, labels):
            continue
        child_options = RouteOptions(
            route_id=f"{options.route_id}.{index}",
            receiver=child.receiver or options.receiver,
            group_by=child.group_by if child.group_by is not None else options.group_by,
            group_wait=child.group_wait if child.group_wait is not None else options.group_wait,
            group_interval=child.group_interval if child.group_interval is not None else options.group_interval,
            repeat_interval=_repeat(child.repeat_interval, options.repeat_interval)
            if child.repeat_interval is not None
            else options.repeat_interval,
        )
        found += _walk(child, child_options, labels)
        if not child.continue_:
            break
    return found or [options]


def group_labels(options: RouteOptions, labels: dict[str, str]) -> dict[str, str]:
    if GROUP_BY_ALL in options.group_by:
        return dict(sorted(labels.items()))
    return {name: labels.get(name, "") for name in sorted(options.group_by)}


def group_key(options: RouteOptions, labels: dict[str, str]) -> str:
    """Stable name of the aggregation group an alert falls in for a route."""
    grouped = orjson.dumps(group_labels(options, labels), option=orjson.OPT_SORT_KEYS).decode()
    return f"{options.route_id}:{options.receiver}:{grouped}"


def silenced(alert: Alert, silences: Iterable[Silence], now: datetime) -> bool:
    """Whether an active silence mutes this alert now."""
    for silence in silences:
        if silence.starts_at > now:
            continue
        if silence.fingerprint is not None:
            # Until resolved: this one firing episode only, and it ends when the alert resolves.
            if (
                silence.fingerprint == alert.fingerprint
                and alert.status == "firing"
                and (silence.episode is None or silence.episode == alert.starts_at)
                and (silence.ends_at is None or now < silence.ends_at)
            ):
                return True
            continue
        if silence.ends_at is not None and now >= silence.ends_at:
            continue
        if _matches(silence.matchers, alert.labels):
            return True
    return False


def acknowledged(alert: Alert, acks: Mapping[str, Acknowledgement]) -> bool:
    ack = acks.get(alert.fingerprint)
    return ack is not None and ack.episode == alert.starts_at and alert.status == "firing"


class Group(BaseModel):
    """An aggregation group of one route and receiver (persisted as JSON)."""

    model_config = ConfigDict(frozen=True)

    key: str
    route_id: str
    receiver: str
    labels: dict[str, str]
    created_at: datetime
    alerts: dict[str, Alert] = Field(default_factory=dict)
    next_flush_at: datetime
    notified_firing: tuple[str, ...] = ()
    """Fingerprints (with their episode) the receiver was last told are firing: ``fp@starts_at``."""
    last_sent_at: datetime | None = None
    seq: int = 0
    """Notifications sent by this group so far: with the key, the notification's stable id."""


def _episode(alert: Alert) -> str:
    return f"{alert.fingerprint}@{alert.starts_at.isoformat()}"


def add_alert(groups: Mapping[str, Group], root: Route, alert: Alert, now: datetime) -> dict[str, Group]:
    """The groups after an alert changed (it fires, or resolved): it joins each group its routes select."""
    updated: dict[str, Group] = {}
    for options in match_routes(root, alert.labels):
        if not options.receiver:
            continue
        key = group_key(options, alert.labels)
        group = groups.get(key) or updated.get(key)
        if group is None:
            if alert.status == "resolved":
                continue  # nothing was said about it in a group that no longer exists
            group = Group(
                key=key,
                route_id=options.route_id,
                receiver=options.receiver,
                labels=group_labels(options, alert.labels),
                created_at=now,
                next_flush_at=now + options.group_wait,
            )
        updated[key] = group.model_copy(update={"alerts": {**group.alerts, alert.fingerprint: alert}})
    return updated


def notification_id(group: Group, seq: int) -> str:
    """Unique per notification: a group key can come back after the group emptied, so its birth counts."""
    digest = hashlib.sha256(f"{group.key}|{group.created_at.isoformat()}".encode()).hexdigest()[:20]
    return f"{digest}-{seq}"


def flush(
    group: Group,
    options: RouteOptions,
    now: datetime,
    *,
    silences: Iterable[Silence] = (),
    acks: Mapping[str, Acknowledgement] | None = None,
    send_resolved: bool = True,
) -> tuple[Group | None, Notification | None]:
    """Look at a group whose ``next_flush_at`` has come: the group after (None once empty) and
    the notification to send, if any."""
    acks = acks or {}
    silence_list = list(silences)
    alerts = sorted(group.alerts.values(), key=lambda alert: (alert.starts_at, alert.fingerprint))
    firing = [a for a in alerts if a.status == "firing" and not silenced(a, silence_list, now)]
    firing_ids = tuple(sorted(_episode(a) for a in firing))
    told = set(group.notified_firing)
    resolved = (
        [a for a in alerts if a.status == "resolved" and _episode(a) in told and not silenced(a, silence_list, now)]
        if send_resolved
        else []
    )
    new_firing = set(firing_ids) - told
    unacked = [a for a in firing if not acknowledged(a, acks)]
    repeat_due = (
        options.repeat_interval is not None
        and bool(unacked)
        and group.last_sent_at is not None
        and now - group.last_sent_at >= options.repeat_interval
    )
    notification: Notification | None = None
    update: dict[str, object] = {"next_flush_at": now + options.group_interval}
    if new_firing or resolved or repeat_due:
        seq = group.seq + 1
        notification = Notification(
            id=notification_id(group, seq),
            receiver=group.receiver,
            group_key=group.key,
            group_labels=group.labels,
            common_labels=_common_labels([*firing, *resolved]),
            status="firing" if firing else "resolved",
            firing=tuple(firing),
            resolved=tuple(resolved),
            repeat=not new_firing and not resolved,
            created_at=now,
        )
        update.update(seq=seq, last_sent_at=now, notified_firing=firing_ids)
    else:
        # Alerts that stopped firing unseen (silenced, or resolved without send_resolved) are forgotten,
        # so if they fire again the receiver hears of it.
        update["notified_firing"] = tuple(sorted(told & set(firing_ids)))
    remaining = {fp: a for fp, a in group.alerts.items() if a.status == "firing"}
    update["alerts"] = remaining
    if not remaining:
        return None, notification
    return group.model_copy(update=update), notification


def _common_labels(alerts: list[Alert]) -> dict[str, str]:
    if not alerts:
        return {}
    common = dict(alerts[0].labels)
    for alert in alerts[1:]:
        common = {name: value for name, value in common.items() if alert.labels.get(name) == value}
    return dict(sorted(common.items()))


def options_for(root: Route, group: Group) -> RouteOptions | None:
    """The current options of a group's route (None when the route tree no longer has it)."""
    for alert in group.alerts.values():
        for options in match_routes(root, alert.labels):
            if options.route_id == group.route_id and options.receiver == group.receiver:
                return options
    return None
