"""Calendar arithmetic in the business time zone: local days, periods, their buckets.

State is kept in day buckets and month buckets keyed by the event's local calendar date,
so every period of the contract is an exact union of stored buckets: a day is one day
bucket, a month one month bucket, an ISO week seven day buckets, a quarter three month
buckets, a year twelve, and a [from, to) day range its whole months plus the loose days.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class PeriodKind(StrEnum):
    """Kinds of calendar periods: day, ISO week, month, quarter, year, or a [from, to) range of days."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"
    RANGE = "range"


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    """The calendar date of an aware instant in the business time zone."""
    return instant.astimezone(zone).date()


def day_key(day: date) -> str:
    return day.isoformat()


def month_key(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class Period:
    """A half-open range of local calendar days [start, end) of a given kind."""

    kind: PeriodKind
    start: date
    end: date

    @property
    def label(self) -> str:
        if self.kind is PeriodKind.DAY:
            return day_key(self.start)
        if self.kind is PeriodKind.WEEK:
            iso = self.start.isocalendar()
            return f"{iso.year:04d}-W{iso.week:02d}"
        if self.kind is PeriodKind.MONTH:
            return month_key(self.start)
        if self.kind is PeriodKind.QUARTER:
            return f"{self.start.year:04d}-Q{(self.start.month - 1) // 3 + 1}"
        if self.kind is PeriodKind.YEAR:
            return f"{self.start.year:04d}"
        return f"{day_key(self.start)}..{day_key(self.end)}"

    def days(self) -> Iterator[date]:
        day = self.start
        while day < self.end:
            yield day
            day += timedelta(days=1)

    def contains(self, day: date) -> bool:
        return self.start <= day < self.end

    def previous(self) -> Period:
        """The period of the same kind just before (a range: the same number of days before)."""
        if self.kind is PeriodKind.DAY:
            return period_of(PeriodKind.DAY, self.start - timedelta(days=1))
        if self.kind is PeriodKind.WEEK:
            return period_of(PeriodKind.WEEK, self.start - timedelta(days=7))
        if self.kind is PeriodKind.MONTH:
            return period_of(PeriodKind.MONTH, _add_months(self.start, -1))
        if self.kind is PeriodKind.QUARTER:
            return period_of(PeriodKind.QUARTER, _add_months(self.start, -3))
        if self.kind is PeriodKind.YEAR:
            return period_of(PeriodKind.YEAR, date(self.start.year - 1, 1, 1))
        length = self.end - self.start
        return Period(PeriodKind.RANGE, self.start - length, self.start)

    def buckets(self) -> tuple[list[str], list[str]]:
        """The (day bucket keys, month bucket keys) whose union is exactly this period."""
        days: list[str] = []
        months: list[str] = []
        day = self.start
        while day < self.end:
            if day.day == 1 and _add_months(day, 1) <= self.end:
                months.append(month_key(day))
                day = _add_months(day, 1)
            else:
                days.append(day_key(day))
                day += timedelta(days=1)
        return days, months


def period_of(kind: PeriodKind, day: date) -> Period:
    """The period of this kind that contains the given local date."""
    if kind is PeriodKind.DAY:
        return Period(kind, day, day + timedelta(days=1))
    if kind is PeriodKind.WEEK:
        start = day - timedelta(days=day.weekday())
        return Period(kind, start, start + timedelta(days=7))
    if kind is PeriodKind.MONTH:
        start = _month_start(day)
        return Period(kind, start, _add_months(start, 1))
    if kind is PeriodKind.QUARTER:
        start = date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
        return Period(kind, start, _add_months(start, 3))
    if kind is PeriodKind.YEAR:
        return Period(kind, date(day.year, 1, 1), date(day.year + 1, 1, 1))
    raise ValueError("a range period needs explicit bounds: use day_range(start, end)")


def day_range(start: date, end: date) -> Period:
    """Any [start, end) range of local days."""
    if end <= start:
        raise ValueError(f"empty day range: {start} .. {end} (the end is exclusive and must be after the start)")
    return Period(PeriodKind.RANGE, start, end)


def parse_period(kind: PeriodKind, value: str | None, *, today: date) -> Period:
    """A period from its label (``2026-11-27``, ``2026-W48``, ``2026-11``, ``2026-Q4``, ``2026``,
    ``2026-11-01..2026-11-15``); no label means the period containing ``today``."""
    if kind is PeriodKind.RANGE:
        if not value or ".." not in value:
            raise ValueError("a range is written FROM..TO with ISO dates, TO exclusive, e.g. 2026-11-01..2026-11-15")
        first, _, last = value.partition("..")
        return day_range(date.fromisoformat(first), date.fromisoformat(last))
    if not value:
        return period_of(kind, today)
    try:
        if kind is PeriodKind.DAY:
            return period_of(kind, date.fromisoformat(value))
        if kind is PeriodKind.WEEK:
            year, _, week = value.partition("-W")
            return period_of(kind, date.fromisocalendar(int(year), int(week), 1))
        if kind is PeriodKind.MONTH:
            year, _, month = value.partition("-")
            return period_of(kind, date(int(year), int(month), 1))
        if kind is PeriodKind.QUARTER:
            year, _, quarter = value.partition("-Q")
            if not 1 <= int(quarter) <= 4:
                raise ValueError(quarter)
            return period_of(kind, date(int(year), (int(quarter) - 1) * 3 + 1, 1))
        return period_of(kind, date(int(value), 1, 1))
    except ValueError:
        examples = {
            PeriodKind.DAY: "2026-11-27",
            PeriodKind.WEEK: "2026-W48",
            PeriodKind.MONTH: "2026-11",
            PeriodKind.QUARTER: "2026-Q4",
            PeriodKind.YEAR: "2026",
        }
        raise ValueError(f"{value!r} is not a {kind} label; write it like {examples[kind]}") from None
