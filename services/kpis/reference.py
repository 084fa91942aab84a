"""Batch reference: every KPI computed straight from a list of events, with no streaming code.

It shares only the validation (services.schemas.events) and the measure names with the
live path; the arithmetic is written again, directly from CONTRACT section 3, as plain
queries over the whole event list. Tests hold the streaming state to it exactly.

``python -m services.kpis.reference events.jsonl --scope company --period month --at 2026-11``
``python -m services.kpis.reference events.jsonl --scope c --window 24h --as-of 2026-11-27T12:00:00Z``
"""

from __future__ import annotations

import argparse
import bisect
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from services.kpis import measures as m
from services.kpis.periods import Period, PeriodKind, parse_period
from services.schemas.events import (
    CallEvent,
    CrmEvent,
    DealCreatedEvent,
    DealLostEvent,
    DealStageChangedEvent,
    DealWonEvent,
    EventRejected,
    MeetingEvent,
    ProposalSentEvent,
    RejectCode,
    ValidationPolicy,
    amount_units,
    validate_event,
)
from services.settings import load_settings

Scope = str  # "m:<id>", "t:<id>", "c"

WINDOW_LENGTHS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


def window_bounds(length: str, as_of: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the rolling window ``length`` ending at ``as_of`` cut to the whole UTC minute."""
    end = as_of.astimezone(UTC).replace(second=0, microsecond=0)
    return end - WINDOW_LENGTHS[length], end


@dataclass
class Admission:
    """The outcome of feeding records in arrival order through the contract's rules."""

    accepted: list[CrmEvent] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[tuple[int, RejectCode]] = field(default_factory=list)
    """(index of the record in the input, reason code)."""


def admit(
    records: Iterable[bytes],
    policy: ValidationPolicy,
    *,
    now: datetime | Sequence[datetime],
) -> Admission:
    """Validate and dedupe raw records in arrival order (``now`` may be given per record)."""
    result = Admission()
    seen: set[str] = set()
    watermark: datetime | None = None
    for index, raw in enumerate(records):
        wall = now if isinstance(now, datetime) else now[index]
        try:
            event = validate_event(raw, policy, now=wall, watermark=watermark)
        except EventRejected as rejected:
            result.rejected.append((index, rejected.rejection.code))
            continue
        if event.event_id in seen:
            result.duplicates += 1
            continue
        seen.add(event.event_id)
        result.accepted.append(event)
        if watermark is None or event.occurred_at > watermark:
            watermark = event.occurred_at
    return result


def _scopes(event: CrmEvent) -> list[Scope]:
    scopes = [f"m:{event.manager_id}", "c"]
    if event.team_id is not None:
        scopes.append(f"t:{event.team_id}")
    return scopes


def _amount(event: CrmEvent) -> Decimal | None:
    """The amount an event carries, if any (deal_created, deal_stage_changed, deal_won)."""
    if isinstance(event, (DealCreatedEvent, DealStageChangedEvent, DealWonEvent)):
        return event.amount
    return None


def _order(event: CrmEvent) -> tuple[datetime, str]:
    return (event.occurred_at, event.event_id)


class ReferenceKpis:
    """All measures per scope and local day, and the current pipeline, from accepted events."""

    def __init__(self, events: Sequence[CrmEvent], zone: ZoneInfo) -> None:
        self.zone = zone
        self.daily: dict[tuple[Scope, date], dict[str, int]] = defaultdict(dict)
        self.timed: dict[Scope, list[tuple[datetime, str, int]]] = defaultdict(list)
        """Per scope, every (occurred_at, measure, value) counted: for rolling windows."""
        self.current: dict[Scope, dict[str, int]] = defaultdict(dict)
        deal_events: dict[str, list[CrmEvent]] = defaultdict(list)
        for event in events:
            if isinstance(event, (DealCreatedEvent, DealStageChangedEvent, DealWonEvent, DealLostEvent)):
                deal_events[event.deal_id].append(event)
        for history in deal_events.values():
            history.sort(key=_order)
        self._activities(events)
        self._deals(deal_events)
        self._customers(deal_events)
        self._pipeline(deal_events)
        for entries in self.timed.values():
            entries.sort(key=lambda entry: entry[0])

    def _count(self, event_or_time: CrmEvent, measure: str, value: int, scopes: list[Scope] | None = None) -> None:
        if value == 0:
            return
        day = event_or_time.occurred_at.astimezone(self.zone).date()
        for scope in scopes or _scopes(event_or_time):
            bucket = self.daily[(scope, day)]
            bucket[measure] = bucket.get(measure, 0) + value
            self.timed[scope].append((event_or_time.occurred_at, measure, value))

    def _activities(self, events: Sequence[CrmEvent]) -> None:
        for event in events:
            if isinstance(event, CallEvent):
                self._count(event, m.CALLS, 1)
                self._count(event, m.CALL_DURATION_S, event.duration_s or 0)
            elif isinstance(event, MeetingEvent):
                self._count(event, m.MEETINGS, 1)
            elif isinstance(event, ProposalSentEvent):
                self._count(event, m.PROPOSALS, 1)

    @staticmethod
    def _created(history: list[CrmEvent]) -> DealCreatedEvent | None:
        return next((e for e in history if isinstance(e, DealCreatedEvent)), None)

    @staticmethod
    def _revenue_at_win(history: list[CrmEvent], win: DealWonEvent) -> int:
        if win.amount is not None:
            return amount_units(win.amount)
        earlier = [amount for e in history if _order(e) < _order(win) and (amount := _amount(e)) is not None]
        return amount_units(earlier[-1]) if earlier else 0

    def _deals(self, deal_events: dict[str, list[CrmEvent]]) -> None:
        for history in deal_events.values():
            created = self._created(history)
            source = created.lead_source if created is not None else "unknown"
            for event in history:
                if isinstance(event, DealCreatedEvent):
                    self._count(event, m.DEALS_CREATED, 1)
                    self._count(event, m.source_created(source), 1)
                    self._count(event, m.stage_entries(event.stage or ""), 1)
                elif isinstance(event, DealStageChangedEvent):
                    self._count(event, m.stage_entries(event.stage), 1)
                elif isinstance(event, DealWonEvent):
                    revenue = self._revenue_at_win(history, event)
                    self._count(event, m.DEALS_WON, 1)
                    self._count(event, m.REVENUE, revenue)
                    self._count(event, m.source_won(source), 1)
                    self._count(event, m.source_revenue(source), revenue)
                    if created is not None:
                        elapsed = event.occurred_at - created.occurred_at
                        self._count(event, m.CYCLE_DEALS, 1)
                        self._count(
                            event,
                            m.CYCLE_US,
                            (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds,
                        )
                elif isinstance(event, DealLostEvent):
                    self._count(event, m.DEALS_LOST, 1)
                    self._count(event, m.lost_reason(event.lost_reason), 1)

    def _customers(self, deal_events: dict[str, list[CrmEvent]]) -> None:
        wins_by_customer: dict[str, list[tuple[DealWonEvent, int]]] = defaultdict(list)
        for history in deal_events.values():
            created = self._created(history)
            if created is None:
                continue
            for event in history:
                if isinstance(event, DealWonEvent):
                    wins_by_customer[created.customer_id].append((event, self._revenue_at_win(history, event)))
        for wins in wins_by_customer.values():
            wins.sort(key=lambda pair: _order(pair[0]))
            first, _ = wins[0]
            self._count(first, m.NEW_CUSTOMERS, 1)
            for win, revenue in wins[1:]:
                self._count(win, m.REPEAT_DEALS, 1)
                self._count(win, m.REPEAT_REVENUE, revenue)

    def _pipeline(self, deal_events: dict[str, list[CrmEvent]]) -> None:
        for history in deal_events.values():
            if self._created(history) is None or isinstance(history[-1], (DealWonEvent, DealLostEvent)):
                continue
            staged = [e for e in history if isinstance(e, (DealCreatedEvent, DealStageChangedEvent))]
            stage = staged[-1].stage or ""
            amounts = [value for e in history if (value := _amount(e)) is not None]
            units = amount_units(amounts[-1]) if amounts else 0
            for scope in _scopes(history[-1]):
                bucket = self.current[scope]
                bucket[m.pipeline_count(stage)] = bucket.get(m.pipeline_count(stage), 0) + 1
                if units:
                    bucket[m.pipeline_amount(stage)] = bucket.get(m.pipeline_amount(stage), 0) + units

    def measures(self, scope: Scope, period: Period) -> dict[str, int]:
        """The additive measures of a scope over a period (a union of local days)."""
        total: dict[str, int] = {}
        for (bucket_scope, day), values in self.daily.items():
            if bucket_scope == scope and period.contains(day):
                for measure, value in values.items():
                    total[measure] = total.get(measure, 0) + value
        return {measure: value for measure, value in total.items() if value}

    def window_measures(self, scope: Scope, start: datetime, end: datetime) -> dict[str, int]:
        """The additive measures of a scope over the events with occurred_at in [start, end)."""
        entries = self.timed.get(scope, [])
        first = bisect.bisect_left(entries, start, key=lambda entry: entry[0])
        last = bisect.bisect_left(entries, end, key=lambda entry: entry[0])
        total: dict[str, int] = {}
        for _, measure, value in entries[first:last]:
            total[measure] = total.get(measure, 0) + value
        return {measure: value for measure, value in total.items() if value}

    def scopes(self) -> set[Scope]:
        return {scope for scope, _ in self.daily} | set(self.current)

    def days(self) -> set[date]:
        return {day for _, day in self.daily}


def read_jsonl(path: Path) -> list[bytes]:
    return [line.rstrip(b"\n") for line in path.read_bytes().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.kpis.reference",
        description="Compute KPIs from a JSONL file of CRM events with the batch reference (no Kafka, no Redis).",
    )
    parser.add_argument("events", type=Path, help="JSONL file, one event per line, in arrival order")
    parser.add_argument("--scope", default="c", help="m:<manager_id>, t:<team_id> or c (company); default c")
    parser.add_argument("--period", default="month", choices=[k.value for k in PeriodKind])
    parser.add_argument("--at", default=None, help="period label, e.g. 2026-11-27, 2026-W48, 2026-11, 2026-Q4")
    parser.add_argument(
        "--window", default=None, choices=list(WINDOW_LENGTHS), help="a rolling window instead of --period/--at"
    )
    parser.add_argument("--as-of", default=None, help="end of the --window (RFC 3339 with offset); default --now")
    parser.add_argument("--now", default=None, help="wall clock for the in_future check (RFC 3339); default now")
    args = parser.parse_args(argv)
    settings = load_settings()
    policy = ValidationPolicy.from_settings(settings.business)
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    admission = admit(read_jsonl(args.events), policy, now=now)
    reference = ReferenceKpis(admission.accepted, settings.business.zone)
    if args.window:
        as_of = datetime.fromisoformat(args.as_of) if args.as_of else now
        if as_of.tzinfo is None:
            parser.error(f"--as-of {args.as_of} needs a UTC offset")
        start, end = window_bounds(args.window, as_of)
        previous = reference.window_measures(args.scope, start - WINDOW_LENGTHS[args.window], start)
        window_out = {
            "scope": args.scope,
            "window": {"length": args.window, "start": start.isoformat(), "end": end.isoformat()},
            "accepted": len(admission.accepted),
            "kpis": m.derive_kpis(reference.window_measures(args.scope, start, end)).model_dump(mode="json"),
            "previous": m.derive_kpis(previous).model_dump(mode="json"),
        }
        sys.stdout.buffer.write(orjson.dumps(window_out, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    try:
        period = parse_period(PeriodKind(args.period), args.at, today=now.astimezone(settings.business.zone).date())
    except ValueError as exc:
        parser.error(str(exc))
    kpis = m.derive_kpis(reference.measures(args.scope, period))
    pipeline = m.derive_pipeline(
        reference.current.get(args.scope, {}), {s.name: s.probability for s in settings.business.funnel}
    )
    out = {
        "scope": args.scope,
        "period": {"kind": period.kind.value, "label": period.label},
        "accepted": len(admission.accepted),
        "duplicates": admission.duplicates,
        "rejected": len(admission.rejected),
        "kpis": kpis.model_dump(mode="json"),
        "pipeline": pipeline.model_dump(mode="json"),
    }
    sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


__all__ = ["WINDOW_LENGTHS", "Admission", "ReferenceKpis", "admit", "main", "window_bounds"]

if __name__ == "__main__":
    raise SystemExit(main())
