"""Calendar arithmetic in the business time zone, across DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import TzInfo

from services.kpis.contributions import Calendar, from_us, to_us
from services.kpis.periods import PeriodKind, day_range, parse_period, period_of

NEW_YORK = ZoneInfo("America/New_York")
ZONES = [ZoneInfo(name) for name in ("UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe")]


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31), timezones=st.just(UTC)),
    st.sampled_from(ZONES),
)
def test_calendar_buckets_equal_the_local_date(instant: datetime, zone: ZoneInfo) -> None:
    local = instant.astimezone(zone)
    assert Calendar(zone).buckets(to_us(instant)) == (
        local.date().isoformat(),
        f"{local.year:04d}-{local.month:02d}",
        instant.strftime("%Y-%m-%d"),
        instant.strftime("%Y-%m-%dT%H"),
        instant.strftime("%Y-%m-%dT%H:%M"),
    )
    assert from_us(to_us(instant)) == instant


TZINFOS = st.one_of(
    st.sampled_from(ZONES),  # varying offsets: never subtracted as naive
    st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes))),
    st.integers(-14 * 3600, 14 * 3600).map(TzInfo),  # the tzinfo of a time pydantic parsed
)


@given(st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2099, 12, 30)), TZINFOS)
def test_to_us_counts_microseconds_since_the_epoch_whatever_the_tzinfo(local: datetime, zone: tzinfo) -> None:
    instant = local.replace(tzinfo=zone)
    offset = instant.utcoffset()
    assert offset is not None
    naive_utc = local - offset
    expected = (naive_utc - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    assert to_us(instant) == expected
    assert to_us(instant) == to_us(instant.astimezone(UTC))  # again, with the epoch cached for that tzinfo


def test_events_around_local_midnight_on_a_dst_day() -> None:
    calendar = Calendar(NEW_YORK)
    # 2026-03-08: clocks go 02:00 -> 03:00 EST->EDT; local midnight before is 05:00 UTC, after is 04:00 UTC.
    assert calendar.buckets(to_us(datetime(2026, 3, 8, 4, 59, 59, 999999, tzinfo=UTC)))[0] == "2026-03-07"
    assert calendar.buckets(to_us(datetime(2026, 3, 8, 5, tzinfo=UTC)))[0] == "2026-03-08"
    assert calendar.buckets(to_us(datetime(2026, 3, 9, 3, 59, 59, tzinfo=UTC)))[0] == "2026-03-08"
    assert calendar.buckets(to_us(datetime(2026, 3, 9, 4, tzinfo=UTC)))[0] == "2026-03-09"


@pytest.mark.parametrize(
    ("kind", "label", "start", "end"),
    [
        (PeriodKind.DAY, "2026-11-27", date(2026, 11, 27), date(2026, 11, 28)),
        (PeriodKind.WEEK, "2026-W48", date(2026, 11, 23), date(2026, 11, 30)),
        (PeriodKind.WEEK, "2026-W01", date(2025, 12, 29), date(2026, 1, 5)),
        (PeriodKind.MONTH, "2026-02", date(2026, 2, 1), date(2026, 3, 1)),
        (PeriodKind.QUARTER, "2026-Q4", date(2026, 10, 1), date(2027, 1, 1)),
        (PeriodKind.YEAR, "2028", date(2028, 1, 1), date(2029, 1, 1)),
        (PeriodKind.RANGE, "2026-11-03..2026-12-05", date(2026, 11, 3), date(2026, 12, 5)),
    ],
)
def test_parse_period(kind: PeriodKind, label: str, start: date, end: date) -> None:
    period = parse_period(kind, label, today=date(2026, 11, 27))
    assert (period.start, period.end) == (start, end)
    assert period.label == label


@pytest.mark.parametrize("label", ["2026-13", "2026-W60", "2026-Q5", "soon", "2026-11-31"])
def test_bad_labels_say_how_to_write_them(label: str) -> None:
    kind = {"2026-13": PeriodKind.MONTH, "2026-W60": PeriodKind.WEEK, "2026-Q5": PeriodKind.QUARTER}.get(
        label, PeriodKind.DAY
    )
    with pytest.raises(ValueError, match="write it like"):
        parse_period(kind, label, today=date(2026, 11, 27))


def test_previous_periods() -> None:
    assert period_of(PeriodKind.MONTH, date(2026, 3, 31)).previous().label == "2026-02"
    assert period_of(PeriodKind.QUARTER, date(2026, 1, 5)).previous().label == "2025-Q4"
    assert period_of(PeriodKind.WEEK, date(2026, 1, 1)).previous().label == "2025-W52"
    assert day_range(date(2026, 11, 10), date(2026, 11, 20)).previous() == day_range(
        date(2026, 10, 31), date(2026, 11, 10)
    )


@given(st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)), st.integers(1, 800))
def test_buckets_cover_a_range_exactly_once(start: date, length: int) -> None:
    period = day_range(start, start + timedelta(days=length))
    days, months = period.buckets()
    covered = [date.fromisoformat(day) for day in days]
    for month in months:
        first = date.fromisoformat(month + "-01")
        covered += list(period_of(PeriodKind.MONTH, first).days())
    assert sorted(covered) == list(period.days())
