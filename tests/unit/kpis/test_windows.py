"""Rolling windows: minute resolution, the previous window, and the fewest buckets that add up to a window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kpis.windows import (
    MINUTES_PER_DAY,
    MINUTES_PER_HOUR,
    WindowLength,
    epoch_minute,
    minute_buckets,
    window_bucket_span,
    window_ending,
)

BASE = epoch_minute(datetime(2026, 11, 20, tzinfo=UTC))  # a UTC midnight


def fewest_pieces(start: int, end: int) -> int:
    """Brute force: the fewest aligned minutes, hours and UTC days that tile [start, end)."""
    best = {start: 0}
    for at in range(start, end):
        if at not in best:
            continue
        for size in (1, MINUTES_PER_HOUR, MINUTES_PER_DAY):
            if at % size == 0 and at + size <= end:
                best[at + size] = min(best.get(at + size, end), best[at] + 1)
    return best[end]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 3 * MINUTES_PER_DAY), st.integers(0, 3 * MINUTES_PER_DAY))
def test_buckets_tile_the_window_exactly_with_the_fewest_pieces(offset: int, length: int) -> None:
    start, end = BASE + offset, BASE + offset + length
    pieces = minute_buckets(start, end)
    covered = [window_bucket_span(granularity, label) for granularity, label in pieces]
    at = start
    for first, last in covered:  # contiguous, in order, no gap, no overlap
        assert first == at
        at = last
    assert at == end
    assert len(pieces) == fewest_pieces(start, end)


def test_a_30_day_window_reads_at_most_about_two_hundred_buckets() -> None:
    window = window_ending(WindowLength.MONTH, datetime(2026, 11, 27, 13, 37, 12, tzinfo=UTC))
    buckets = window.buckets()
    counts = {g: sum(1 for granularity, _ in buckets if granularity == g) for g in ("utcday", "hour", "minute")}
    # 13:37 -> minutes 13:37..13:59 and 13:00..13:36 at the two ends, hours 14..23 and 0..12, 29 days between.
    assert counts == {"utcday": 29, "hour": 10 + 13, "minute": 23 + 37}
    assert buckets[0] == ("minute", "2026-10-28T13:37")
    assert buckets[-1] == ("minute", "2026-11-27T13:36")


@pytest.mark.parametrize(
    ("as_of", "start", "end"),
    [
        # rounded down to the whole UTC minute, whatever the offset of as_of
        ("2026-11-27T12:34:56.789+00:00", "2026-11-27T11:34:00+00:00", "2026-11-27T12:34:00+00:00"),
        ("2026-11-27T13:34:59+01:00", "2026-11-27T11:34:00+00:00", "2026-11-27T12:34:00+00:00"),
        ("2026-11-27T12:00:00Z", "2026-11-27T11:00:00+00:00", "2026-11-27T12:00:00+00:00"),
        # India is 5:30 ahead: whole minutes still line up
        ("2026-11-27T18:04:30+05:30", "2026-11-27T11:34:00+00:00", "2026-11-27T12:34:00+00:00"),
    ],
)
def test_a_window_ends_at_as_of_rounded_down_to_the_minute(as_of: str, start: str, end: str) -> None:
    window = window_ending(WindowLength.HOUR, datetime.fromisoformat(as_of))
    assert window.start == datetime.fromisoformat(start)
    assert window.end == datetime.fromisoformat(end)


def test_the_previous_window_has_the_same_length_and_ends_where_this_one_starts() -> None:
    window = window_ending(WindowLength.WEEK, datetime(2026, 11, 27, 12, 30, tzinfo=UTC))
    previous = window.previous()
    assert previous.end == window.start == datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
    assert previous.start == datetime(2026, 11, 13, 12, 30, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_epoch_minute_floors(instant: datetime) -> None:
    minute = epoch_minute(instant)
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    assert start <= instant < start + timedelta(minutes=1)
    assert epoch_minute(instant.astimezone(timezone(timedelta(hours=-3, minutes=-30)))) == minute


def test_naive_as_of_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        window_ending(WindowLength.HOUR, datetime(2026, 11, 27, 12))


def test_lengths() -> None:
    assert [length.minutes for length in WindowLength] == [60, 1440, 7 * 1440, 30 * 1440]
    assert [str(length) for length in WindowLength] == ["1h", "24h", "7d", "30d"]
