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
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import NamedTuple, TypeVar, cast
from zoneinfo import ZoneInfo

from pydantic_core import TzInfo

from services.kpis import measures as m
from services.kpis.retention import bucket_end_s
from services.kpis.windows import MINUTE_PREFIXES, hour_label, utcday_label
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

BucketKey = tuple[str, str, str]
"""(scope token, granularity, bucket label ('' for current)); the granularity is one of
BUCKET_GRANULARITIES or 'cur'."""
Contributions = dict[BucketKey, dict[str, int]]
"""Per stored bucket, measure field -> delta: what a commit adds to the state."""

CURRENT_MINUTE = -1
"""The minute of a cell of current-state measures (they belong to no period)."""
CellKey = tuple[tuple[str, ...], int]
"""(the scopes an event counts for, its UTC minute since the epoch or CURRENT_MINUTE)."""
Cells = dict[CellKey, dict[str, int]]
"""Measure deltas per (scopes, minute): the compact form the core computes in. One event adds to
one cell; :func:`expand_cells` spreads cells over the five bucket granularities and the scopes,
rolling minutes up into hours, UTC days, local days and months so that each coarser bucket is
added to once per group, not once per event."""

BUCKET_GRANULARITIES = ("day", "month", "utcday", "hour", "minute")
"""Every period measure goes to one bucket of each: local day and month (calendar periods), and
UTC day, hour and minute (rolling windows)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SLOT_US = 15 * 60 * 1_000_000


_FIXED_OFFSETS = (timezone, TzInfo)
"""The tzinfo types of a fixed offset: the standard library's and the one pydantic gives parsed times."""
_EPOCH_IN: dict[tzinfo | None, datetime] = {}
"""The epoch in each fixed-offset tzinfo met (a few: events carry few offsets)."""


def to_us(instant: datetime) -> int:
    """An aware instant as integer microseconds since the epoch (exact)."""
    # Two aware datetimes with the same tzinfo object subtract as naive ones; with different ones,
    # Python asks both for their offset (half the cost). So the epoch is expressed in the instant's
    # own tzinfo, which is exact only for a fixed offset.
    zone = instant.tzinfo
    epoch = _EPOCH_IN.get(zone)
    if epoch is None:
        epoch = _EPOCH
        if type(zone) in _FIXED_OFFSETS and len(_EPOCH_IN) < 64:
            epoch = _EPOCH_IN[zone] = _EPOCH.astimezone(zone)
    delta = instant - epoch
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
    """Bucket labels of instants: local day and month in the business time zone (cached per 15-minute
    slot), UTC day and hour (cached per hour), and the minute.

    Zone offsets and their changes fall on quarter hours, so the local date is constant
    within each aligned 15-minute slot of UTC; one zone lookup per slot suffices.
    """

    _CACHE_LIMIT = 200_000

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._slots: dict[int, tuple[str, str]] = {}
        self._hours: dict[int, tuple[str, str]] = {}
        self._ends: dict[tuple[str, str], int] = {}

    def local_labels(self, t_us: int) -> tuple[str, str]:
        """The local day and month labels of an instant."""
        slot = t_us // SLOT_US
        found = self._slots.get(slot)
        if found is None:
            local = from_us(slot * SLOT_US).astimezone(self.zone)
            found = (f"{local.year:04d}-{local.month:02d}-{local.day:02d}", f"{local.year:04d}-{local.month:02d}")
            if len(self._slots) > self._CACHE_LIMIT:
                self._slots.clear()
            self._slots[slot] = found
        return found

    def buckets(self, t_us: int) -> Buckets:
        """The labels of the buckets the instant falls in (the minute's own label, not its hash's)."""
        minute = t_us // 60_000_000
        day, month = self.local_labels(t_us)
        utcday, hour = self.utc_labels(minute // 60)
        return Buckets(day, month, utcday, hour, f"{hour}:{minute % 60:02d}")

    def utc_labels(self, hour: int) -> tuple[str, str]:
        """The labels of the UTC day and the UTC hour of an hour since the epoch."""
        found = self._hours.get(hour)
        if found is None:
            found = (utcday_label(hour // 24), hour_label(hour))
            if len(self._hours) > self._CACHE_LIMIT:
                self._hours.clear()
            self._hours[hour] = found
        return found

    def end_s(self, granularity: str, bucket: str) -> int:
        """The end of a stored bucket (exclusive, epoch seconds): what its retention is measured by."""
        key = (granularity, bucket)
        found = self._ends.get(key)
        if found is None:
            found = bucket_end_s(granularity, bucket, self.zone)
            if len(self._ends) > self._CACHE_LIMIT:
                self._ends.clear()
            self._ends[key] = found
        return found


@lru_cache(maxsize=65_536)
def event_scopes(manager_id: str, team_id: str | None) -> tuple[str, ...]:
    """The scopes an event counts for: its manager, its team if it carries one, the company."""
    if team_id is None:
        return (scope_token("manager", manager_id), scope_token("company", ""))
    return (scope_token("manager", manager_id), scope_token("team", team_id), scope_token("company", ""))


_K = TypeVar("_K")


def _put(out: Cells, cell: CellKey, field: str, value: int) -> None:
    if not value:
        return
    fields = out.get(cell)
    if fields is None:
        out[cell] = {field: value}
    else:
        fields[field] = fields.get(field, 0) + value


def _merge(out: dict[_K, dict[str, int]], key: _K, fields: dict[str, int]) -> None:
    found = out.get(key)
    if found is None:
        out[key] = dict(fields)
    else:
        get = found.get
        for field, value in fields.items():
            found[field] = get(field, 0) + value


def _spread(out: Contributions, scopes: tuple[str, ...], granularity: str, label: str, fields: dict[str, int]) -> None:
    for scope in scopes:
        _merge(out, (scope, granularity, label), fields)


def expand_cells(
    cells: Cells, calendar: Calendar, cutoffs: dict[str, int] | None = None
) -> tuple[Contributions, dict[tuple[str, str], int]]:
    """Spread cells over their buckets: the contributions per stored bucket, and the end (epoch
    seconds) of each bucket they touch, the score of its key in the time index.

    Minutes go to the minute hash of their hour, as ``MM/measure`` fields (``services.kpis.windows``).
    ``cutoffs`` (``RetentionPolicy.cutoffs``): buckets ending at or before their granularity's
    cutoff are expired and left out (see ``BatchProcessor``). Cells whose deltas all cancelled
    out (a deal's events seen before and again after a batch) touch nothing.
    """
    out: Contributions = {}
    ends: dict[tuple[str, str], int] = {}
    never = -(2**62)
    cut = cutoffs or {}
    minute_cut, hour_cut, utcday_cut = (cut.get(g, never) for g in ("minute", "hour", "utcday"))
    day_cut, month_cut = cut.get("day", never), cut.get("month", never)
    minutes: dict[tuple[tuple[str, ...], int], dict[str, int]] = {}
    hours: dict[tuple[tuple[str, ...], int], dict[str, int]] = {}
    days: dict[tuple[tuple[str, ...], str, str], dict[str, int]] = {}
    local_labels = calendar.local_labels
    for (scopes, minute), fields in cells.items():
        if not any(fields.values()):
            continue
        if minute == CURRENT_MINUTE:
            _spread(out, scopes, CURRENT, "", fields)
            continue
        hour = minute // 60
        if (hour + 1) * 3600 > minute_cut:
            # One cell per (scopes, minute), so its fields are new to the (scopes, hour) hash.
            prefix = MINUTE_PREFIXES[minute % 60]
            of_hour = minutes.get((scopes, hour))
            if of_hour is None:
                minutes[(scopes, hour)] = of_hour = {}
            for field, value in fields.items():
                of_hour[prefix + field] = value
        if (hour + 1) * 3600 > hour_cut or (hour // 24 + 1) * 86_400 > utcday_cut:  # (else both expired)
            _merge(hours, (scopes, hour), fields)
        _merge(days, (scopes, *local_labels(minute * 60_000_000)), fields)
    utc_labels = calendar.utc_labels
    for (scopes, hour), fields in minutes.items():
        label = utc_labels(hour)[1]
        _spread(out, scopes, "minute", label, fields)
        ends[("minute", label)] = (hour + 1) * 3600
    utcdays: dict[tuple[tuple[str, ...], int], dict[str, int]] = {}
    for (scopes, hour), fields in hours.items():
        end = (hour + 1) * 3600
        if end > hour_cut:
            label = utc_labels(hour)[1]
            _spread(out, scopes, "hour", label, fields)
            ends[("hour", label)] = end
        _merge(utcdays, (scopes, hour // 24), fields)
    for (scopes, utcday), fields in utcdays.items():
        end = (utcday + 1) * 86_400
        if end > utcday_cut:
            label = utc_labels(utcday * 24)[0]
            _spread(out, scopes, "utcday", label, fields)
            ends[("utcday", label)] = end
    months: dict[tuple[tuple[str, ...], str], dict[str, int]] = {}
    for (scopes, day, month), fields in days.items():
        end = calendar.end_s("day", day)
        if end > day_cut:
            _spread(out, scopes, "day", day, fields)
            ends[("day", day)] = end
        _merge(months, (scopes, month), fields)
    for (scopes, month), fields in months.items():
        end = calendar.end_s("month", month)
        if end > month_cut:
            _spread(out, scopes, "month", month, fields)
            ends[("month", month)] = end
    return out, ends


def activity_contributions(event: CrmEvent, t_us: int, out: Cells) -> None:
    """Add a call, meeting or proposal's own contribution to ``out`` (``t_us``: its occurred_at)."""
    cell = (event_scopes(event.manager_id, event.team_id), t_us // 60_000_000)
    fields = out.get(cell)
    if fields is None:
        out[cell] = fields = {}
    kind = type(event)  # (isinstance of a pydantic model goes through ABCMeta: slow when false)
    if kind is CallEvent:
        fields[m.CALLS] = fields.get(m.CALLS, 0) + 1
        duration = cast(CallEvent, event).duration_s
        if duration:
            fields[m.CALL_DURATION_S] = fields.get(m.CALL_DURATION_S, 0) + duration
    elif kind is MeetingEvent:
        fields[m.MEETINGS] = fields.get(m.MEETINGS, 0) + 1
    else:
        fields[m.PROPOSALS] = fields.get(m.PROPOSALS, 0) + 1


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
    def from_event(cls, event: CrmEvent, t_us: int) -> DealEvent:
        """The history entry of a deal event whose occurred_at is ``t_us``."""
        amount = event.amount if isinstance(event, _WITH_AMOUNT) else None
        return cls(
            t_us=t_us,
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

    contributions: Cells
    customer_id: str | None
    wins: tuple[Win, ...]
    is_open: bool = False
    """In the open pipeline: deal_created known and the latest deal event neither won nor lost."""
    latest_us: int | None = None
    """occurred_at of the deal's latest event (None for a deal with no events)."""


def deal_contributions(history: Iterable[DealEvent]) -> DealOutcome:
    """The contribution of one deal, from all of its known events (any order)."""
    events = sorted(history, key=lambda e: e.order)
    out: Cells = {}
    created = next((e for e in events if e.type == EventType.DEAL_CREATED), None)
    source = (created.lead_source or "unknown") if created is not None else "unknown"
    customer = created.customer_id if created is not None else None
    last_amount: int | None = None
    stage: str | None = None
    wins: list[Win] = []
    for event in events:
        cell = (event_scopes(event.manager_id, event.team_id), event.t_us // 60_000_000)
        kind = event.type
        if kind == EventType.DEAL_CREATED:
            _put(out, cell, m.DEALS_CREATED, 1)
            _put(out, cell, m.source_created(source), 1)
        if kind == EventType.DEAL_CREATED or kind == EventType.DEAL_STAGE_CHANGED:
            stage = event.stage
            if stage is not None:
                _put(out, cell, m.stage_entries(stage), 1)
        elif kind == EventType.DEAL_WON:
            revenue = event.amount if event.amount is not None else (last_amount or 0)
            _put(out, cell, m.DEALS_WON, 1)
            _put(out, cell, m.REVENUE, revenue)
            _put(out, cell, m.source_won(source), 1)
            _put(out, cell, m.source_revenue(source), revenue)
            if created is not None:
                _put(out, cell, m.CYCLE_DEALS, 1)
                _put(out, cell, m.CYCLE_US, event.t_us - created.t_us)
            if customer is not None:
                wins.append(Win(event.t_us, event.event_id, event.manager_id, event.team_id, revenue))
        elif kind == EventType.DEAL_LOST:
            _put(out, cell, m.DEALS_LOST, 1)
            _put(out, cell, m.lost_reason(event.lost_reason or "unspecified"), 1)
        if event.amount is not None:
            last_amount = event.amount
    is_open = created is not None and bool(events) and events[-1].type not in (EventType.DEAL_WON, EventType.DEAL_LOST)
    if is_open:
        latest = events[-1]
        if stage is not None:
            current = (event_scopes(latest.manager_id, latest.team_id), CURRENT_MINUTE)
            _put(out, current, m.pipeline_count(stage), 1)
            _put(out, current, m.pipeline_amount(stage), last_amount or 0)
    return DealOutcome(
        contributions=out,
        customer_id=customer,
        wins=tuple(wins),
        is_open=is_open,
        latest_us=events[-1].t_us if events else None,
    )


def customer_contributions(wins: Iterable[Win]) -> Cells:
    """Repeat deals and revenue, and the new customer, from all of a customer's wins."""
    out: Cells = {}
    for index, win in enumerate(sorted(wins, key=lambda w: w.order)):
        cell = (event_scopes(win.manager_id, win.team_id), win.t_us // 60_000_000)
        if index == 0:
            _put(out, cell, m.NEW_CUSTOMERS, 1)
        else:
            _put(out, cell, m.REPEAT_DEALS, 1)
            _put(out, cell, m.REPEAT_REVENUE, win.revenue)
    return out


def subtract_into(total: Cells, old: Cells, new: Cells) -> None:
    """Add ``new - old`` into ``total`` (cells that cancel out touch no bucket)."""
    for cell, fields in new.items():
        _merge(total, cell, fields)
    for cell, fields in old.items():
        found = total.get(cell)
        if found is None:
            total[cell] = {field: -value for field, value in fields.items()}
        else:
            get = found.get
            for field, value in fields.items():
                found[field] = get(field, 0) - value
