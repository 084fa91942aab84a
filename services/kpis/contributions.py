"""What each event adds to the additive measures: the pure core of the streaming state.

The state is a sum of contributions. An activity (call, meeting, proposal) contributes on
its own. A deal's events contribute together, as a function of the deal's whole history,
because the revenue of a win, a deal's lead source and its sales cycle depend on other
events of the same deal; a customer's wins contribute together for repeat business and
new customers. When an event arrives, late or early, the affected deal's (and customer's)
contribution is computed before and after, and only the difference is applied. So the
result is the same for any arrival order: that is what makes out-of-order events exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from services.kpis import measures as m
from services.kpis.retention import bucket_end_s
from services.kpis.windows import hour_label, utcday_label
from services.schemas.events import (
    CallEvent,
    CrmEvent,
    DealCreatedEvent,
    DealLostEvent,
    DealStageChangedEvent,
    DealWonEvent,
    EventType,
    MeetingEvent,
    amount_units,
)
from services.topics import scope_token

CURRENT = "cur"
"""Granularity marker of current-state (not period) measures."""

ContributionKey = tuple[str, str, str, str]
"""(scope token, granularity, bucket key ('' for current), measure field); the granularity is one of
BUCKET_GRANULARITIES or 'cur'."""
Contributions = dict[ContributionKey, int]

BUCKET_GRANULARITIES = ("day", "month", "utcday", "hour", "minute")
"""Every period measure goes to one bucket of each: local day and month (calendar periods), and
UTC day, hour and minute (rolling windows)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SLOT_US = 15 * 60 * 1_000_000


def to_us(instant: datetime) -> int:
    """An aware instant as integer microseconds since the epoch (exact)."""
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(t_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=t_us)


class Buckets(NamedTuple):
    """The bucket labels of one instant, in the order of BUCKET_GRANULARITIES."""

    day: str
    month: str
    utcday: str
    hour: str
    minute: str


class Calendar:
    """Bucket labels of instants: local day and month in the business time zone, UTC day, hour
    and minute (cached).

    Zone offsets and their changes fall on quarter hours, so the local date is constant
    within each aligned 15-minute slot of UTC; one zone lookup per slot suffices.
    """

    _CACHE_LIMIT = 200_000

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._slots: dict[int, tuple[str, str]] = {}
        self._hours: dict[int, tuple[str, str]] = {}
        self._minutes: dict[int, Buckets] = {}
        self._ends: dict[tuple[str, str], int] = {}

    def _local(self, t_us: int) -> tuple[str, str]:
        slot = t_us // _SLOT_US
        found = self._slots.get(slot)
        if found is None:
            local = from_us(slot * _SLOT_US).astimezone(self.zone)
            found = (f"{local.year:04d}-{local.month:02d}-{local.day:02d}", f"{local.year:04d}-{local.month:02d}")
            if len(self._slots) > self._CACHE_LIMIT:
                self._slots.clear()
            self._slots[slot] = found
        return found

    def buckets(self, t_us: int) -> Buckets:
        """The labels of the buckets the instant falls in."""
        minute = t_us // 60_000_000
        found = self._minutes.get(minute)
        if found is None:
            day, month = self._local(minute * 60_000_000)  # a whole minute lies in one 15-minute slot
            hour = minute // 60
            utc = self._hours.get(hour)
            if utc is None:
                utc = (utcday_label(hour // 24), hour_label(hour))
                if len(self._hours) > self._CACHE_LIMIT:
                    self._hours.clear()
                self._hours[hour] = utc
            found = Buckets(day, month, utc[0], utc[1], f"{utc[1]}:{minute % 60:02d}")
            if len(self._minutes) > self._CACHE_LIMIT:
                self._minutes.clear()
            self._minutes[minute] = found
            # The ends of the UTC-aligned buckets are known here; parsing their labels back costs more.
            if len(self._ends) > self._CACHE_LIMIT:
                self._ends.clear()
            ends = self._ends
            ends[("minute", found.minute)] = (minute + 1) * 60
            ends[("hour", found.hour)] = (hour + 1) * 3600
            ends[("utcday", found.utcday)] = (hour // 24 + 1) * 86_400
        return found

    def end_s(self, granularity: str, bucket: str) -> int:
        """The end of a bucket (exclusive, epoch seconds): what its retention is measured by."""
        key = (granularity, bucket)
        found = self._ends.get(key)
        if found is None:
            found = bucket_end_s(granularity, bucket, self.zone)
            if len(self._ends) > self._CACHE_LIMIT:
                self._ends.clear()
            self._ends[key] = found
        return found


def event_scopes(manager_id: str, team_id: str | None) -> tuple[str, ...]:
    """The scopes an event counts for: its manager, its team if it carries one, the company."""
    if team_id is None:
        return (scope_token("manager", manager_id), scope_token("company", ""))
    return (scope_token("manager", manager_id), scope_token("team", team_id), scope_token("company", ""))


def _add(out: Contributions, scopes: Sequence[str], buckets: Buckets, field: str, value: int) -> None:
    if not value:
        return
    get = out.get
    day, month, utcday, hour, minute = buckets
    for scope in scopes:  # unrolled over BUCKET_GRANULARITIES: the hottest loop of the worker
        key = (scope, "day", day, field)
        out[key] = get(key, 0) + value
        key = (scope, "month", month, field)
        out[key] = get(key, 0) + value
        key = (scope, "utcday", utcday, field)
        out[key] = get(key, 0) + value
        key = (scope, "hour", hour, field)
        out[key] = get(key, 0) + value
        key = (scope, "minute", minute, field)
        out[key] = get(key, 0) + value


def activity_contributions(event: CrmEvent, calendar: Calendar, out: Contributions) -> None:
    """Add a call, meeting or proposal's own contribution to ``out``."""
    scopes = event_scopes(event.manager_id, event.team_id)
    buckets = calendar.buckets(to_us(event.occurred_at))
    if isinstance(event, CallEvent):
        _add(out, scopes, buckets, m.CALLS, 1)
        _add(out, scopes, buckets, m.CALL_DURATION_S, event.duration_s or 0)
    elif isinstance(event, MeetingEvent):
        _add(out, scopes, buckets, m.MEETINGS, 1)
    else:
        _add(out, scopes, buckets, m.PROPOSALS, 1)


_WITH_AMOUNT = (DealCreatedEvent, DealStageChangedEvent, DealWonEvent)


@dataclass(frozen=True, slots=True)
class DealEvent:
    """The part of a deal_* event that the deal's history keeps."""

    t_us: int
    event_id: str
    type: str
    manager_id: str
    team_id: str | None = None
    amount: int | None = None
    stage: str | None = None
    customer_id: str | None = None
    lead_source: str | None = None
    lost_reason: str | None = None

    @property
    def order(self) -> tuple[int, str]:
        """Contract order within a deal: (occurred_at, event_id)."""
        return (self.t_us, self.event_id)

    @classmethod
    def from_event(cls, event: CrmEvent) -> DealEvent:
        amount = event.amount if isinstance(event, _WITH_AMOUNT) else None
        return cls(
            t_us=to_us(event.occurred_at),
            event_id=event.event_id,
            type=str(event.type),
            manager_id=event.manager_id,
            team_id=event.team_id,
            amount=amount_units(amount) if amount is not None else None,
            stage=event.stage if isinstance(event, (DealCreatedEvent, DealStageChangedEvent)) else None,
            customer_id=event.customer_id if isinstance(event, DealCreatedEvent) else None,
            lead_source=event.lead_source if isinstance(event, DealCreatedEvent) else None,
            lost_reason=event.lost_reason if isinstance(event, DealLostEvent) else None,
        )

    def to_row(self) -> list[object]:
        return [
            self.t_us,
            self.event_id,
            self.type,
            self.manager_id,
            self.team_id,
            self.amount,
            self.stage,
            self.customer_id,
            self.lead_source,
            self.lost_reason,
        ]

    @classmethod
    def from_row(cls, row: Sequence[object]) -> DealEvent:
        return cls(*row)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Win:
    """One deal_won of a deal whose customer is known: what customer history needs."""

    t_us: int
    event_id: str
    manager_id: str
    team_id: str | None
    revenue: int

    @property
    def order(self) -> tuple[int, str]:
        return (self.t_us, self.event_id)

    def to_row(self) -> list[object]:
        return [self.t_us, self.event_id, self.manager_id, self.team_id, self.revenue]

    @classmethod
    def from_row(cls, row: Sequence[object]) -> Win:
        return cls(*row)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DealOutcome:
    """A deal's whole contribution, plus the wins its customer's history needs."""

    contributions: Contributions
    customer_id: str | None
    wins: tuple[Win, ...]
    is_open: bool = False
    """In the open pipeline: deal_created known and the latest deal event neither won nor lost."""
    latest_us: int | None = None
    """occurred_at of the deal's latest event (None for a deal with no events)."""


def deal_contributions(history: Iterable[DealEvent], calendar: Calendar) -> DealOutcome:
    """The contribution of one deal, from all of its known events (any order)."""
    events = sorted(history, key=lambda e: e.order)
    out: Contributions = {}
    created = next((e for e in events if e.type == EventType.DEAL_CREATED), None)
    source = (created.lead_source or "unknown") if created is not None else "unknown"
    customer = created.customer_id if created is not None else None
    last_amount: int | None = None
    stage: str | None = None
    wins: list[Win] = []
    for event in events:
        scopes = event_scopes(event.manager_id, event.team_id)
        buckets = calendar.buckets(event.t_us)
        kind = event.type
        if kind == EventType.DEAL_CREATED:
            _add(out, scopes, buckets, m.DEALS_CREATED, 1)
            _add(out, scopes, buckets, m.source_created(source), 1)
        if kind == EventType.DEAL_CREATED or kind == EventType.DEAL_STAGE_CHANGED:
            stage = event.stage
            if stage is not None:
                _add(out, scopes, buckets, m.stage_entries(stage), 1)
        elif kind == EventType.DEAL_WON:
            revenue = event.amount if event.amount is not None else (last_amount or 0)
            _add(out, scopes, buckets, m.DEALS_WON, 1)
            _add(out, scopes, buckets, m.REVENUE, revenue)
            _add(out, scopes, buckets, m.source_won(source), 1)
            _add(out, scopes, buckets, m.source_revenue(source), revenue)
            if created is not None:
                _add(out, scopes, buckets, m.CYCLE_DEALS, 1)
                _add(out, scopes, buckets, m.CYCLE_US, event.t_us - created.t_us)
            if customer is not None:
                wins.append(Win(event.t_us, event.event_id, event.manager_id, event.team_id, revenue))
        elif kind == EventType.DEAL_LOST:
            _add(out, scopes, buckets, m.DEALS_LOST, 1)
            _add(out, scopes, buckets, m.lost_reason(event.lost_reason or "unspecified"), 1)
        if event.amount is not None:
            last_amount = event.amount
    is_open = created is not None and bool(events) and events[-1].type not in (EventType.DEAL_WON, EventType.DEAL_LOST)
    if is_open:
        latest = events[-1]
        if stage is not None:
            for scope in event_scopes(latest.manager_id, latest.team_id):
                out[(scope, CURRENT, "", m.pipeline_count(stage))] = 1
                if last_amount:
                    out[(scope, CURRENT, "", m.pipeline_amount(stage))] = last_amount
    return DealOutcome(
        contributions=out,
        customer_id=customer,
        wins=tuple(wins),
        is_open=is_open,
        latest_us=events[-1].t_us if events else None,
    )


def customer_contributions(wins: Iterable[Win], calendar: Calendar) -> Contributions:
    """Repeat deals and revenue, and the new customer, from all of a customer's wins."""
    out: Contributions = {}
    for index, win in enumerate(sorted(wins, key=lambda w: w.order)):
        scopes = event_scopes(win.manager_id, win.team_id)
        buckets = calendar.buckets(win.t_us)
        if index == 0:
            _add(out, scopes, buckets, m.NEW_CUSTOMERS, 1)
        else:
            _add(out, scopes, buckets, m.REPEAT_DEALS, 1)
            _add(out, scopes, buckets, m.REPEAT_REVENUE, win.revenue)
    return out


def subtract_into(total: Contributions, old: Contributions, new: Contributions) -> None:
    """Add ``new - old`` into ``total`` (zero results are dropped by the writer)."""
    for key, value in new.items():
        total[key] = total.get(key, 0) + value
    for key, value in old.items():
        total[key] = total.get(key, 0) - value


def add_into(total: Contributions, more: Contributions) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value
