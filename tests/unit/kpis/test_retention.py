"""Retention arithmetic: bucket ends, cutoffs behind the watermark, and what must never expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.kpis.contributions import BUCKET_GRANULARITIES, Calendar, Cells, expand_cells, to_us
from services.kpis.retention import DEAL, RetentionPolicy, bucket_end_s, deal_end_s
from services.kpis.windows import WindowLength, minute_location, window_ending
from services.settings import Settings, minimum_month_months

NEW_YORK = ZoneInfo("America/New_York")
ZONES = [ZoneInfo(name) for name in ("UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Pacific/Chatham")]


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def policy(zone: str = "UTC", **retention: int) -> RetentionPolicy:
    return RetentionPolicy.from_settings(Settings(business={"timezone": zone}, retention=retention))


@pytest.mark.parametrize(
    ("granularity", "label", "zone", "end"),
    [
        # the minutes of an hour are stored in one hash, labelled with the hour: it ends with the hour
        ("minute", "2026-11-27T10", "UTC", "2026-11-27T11:00:00+00:00"),
        ("minute", "2026-12-31T23", "UTC", "2027-01-01T00:00:00+00:00"),
        ("hour", "2026-11-27T23", "UTC", "2026-11-28T00:00:00+00:00"),
        ("utcday", "2026-11-27", "America/New_York", "2026-11-28T00:00:00+00:00"),
        ("day", "2026-11-27", "America/New_York", "2026-11-28T05:00:00+00:00"),
        # the DST change of 2026-03-08: the local day is 23 hours long and ends at 04:00 UTC
        ("day", "2026-03-08", "America/New_York", "2026-03-09T04:00:00+00:00"),
        ("month", "2026-02", "America/New_York", "2026-03-01T05:00:00+00:00"),
        ("month", "2026-12", "Europe/Berlin", "2026-12-31T23:00:00+00:00"),
    ],
)
def test_bucket_end(granularity: str, label: str, zone: str, end: str) -> None:
    assert bucket_end_s(granularity, label, ZoneInfo(zone)) == epoch(end)


def test_an_unknown_granularity_is_an_error() -> None:
    with pytest.raises(ValueError, match="week"):
        bucket_end_s("week", "2026-W48", ZoneInfo("UTC"))


def test_default_cutoffs() -> None:
    watermark = datetime(2026, 11, 27, 12, 0, 30, tzinfo=UTC)
    cutoffs = policy().cutoffs(to_us(watermark))
    seconds = int(watermark.timestamp())
    assert cutoffs["day"] == seconds - 737 * 86_400  # 730-day history retention + 7-day margin
    assert cutoffs["utcday"] == cutoffs["hour"] == cutoffs["minute"] == seconds - 62 * 86_400
    assert cutoffs[DEAL] == seconds - 737 * 86_400
    # 26 months kept, November 2026 included: 2024-10 .. 2026-11; 2024-09 ends at the cutoff.
    assert cutoffs["month"] == epoch("2024-10-01T00:00:00+00:00")
    assert bucket_end_s("month", "2024-09", ZoneInfo("UTC")) <= cutoffs["month"]
    assert bucket_end_s("month", "2024-10", ZoneInfo("UTC")) > cutoffs["month"]


def test_month_cutoff_follows_the_business_time_zone() -> None:
    # 2026-11-01T02:00Z is still October in New York: October and the 25 months before it are kept.
    cutoffs = policy("America/New_York").cutoffs(to_us(datetime(2026, 11, 1, 2, tzinfo=UTC)))
    assert cutoffs["month"] == epoch("2024-09-01T04:00:00+00:00")


def test_settings_name_the_retention() -> None:
    kept = policy(minute_days=3, hour_days=10, utcday_days=40, deal_margin_days=1, day_margin_days=2, month_months=30)
    assert (kept.minute_days, kept.hour_days, kept.utcday_days) == (3, 10, 40)
    assert (kept.day_days, kept.deal_days, kept.month_months) == (732, 731, 30)
    assert kept.window_days == 3


def test_month_retention_must_cover_the_history_retention() -> None:
    assert minimum_month_months(730, 7) == 26
    Settings(business={"history_retention_days": 730})
    with pytest.raises(ValidationError, match="keep at least 35 months"):
        Settings(business={"history_retention_days": 1000})
    Settings(business={"history_retention_days": 1000}, retention={"month_months": 35})
    Settings(business={"history_retention_days": 90}, retention={"month_months": 5})


def test_deal_end_is_the_second_after_the_latest_event() -> None:
    latest = to_us(datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC))
    assert deal_end_s(latest) == epoch("2026-01-01T12:00:01+00:00")


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2037, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 10**6),
    st.sampled_from(ZONES),
    st.sampled_from([(730, 7), (730, 0), (365, 3), (90, 1), (1000, 7), (31, 0)]),
)
def test_no_acceptable_event_lands_in_an_expired_day_or_month(
    watermark: datetime, back_s: int, zone: ZoneInfo, retention: tuple[int, int]
) -> None:
    """A batch validates against a watermark at most the margin older than the sweep's: every event
    it may accept lies in local-day and month buckets the sweep keeps."""
    history, margin = retention
    kept = RetentionPolicy.from_settings(
        Settings(
            business={"timezone": zone.key, "history_retention_days": history},
            retention={"day_margin_days": margin, "month_months": minimum_month_months(history, margin)},
        )
    )
    oldest = watermark - timedelta(days=history + margin)
    occurred = oldest + timedelta(seconds=back_s % int(timedelta(days=history + margin).total_seconds()))
    cutoffs = kept.cutoffs(to_us(watermark))
    buckets = Calendar(zone).buckets(to_us(occurred))
    assert bucket_end_s("day", buckets.day, zone) > cutoffs["day"]
    assert bucket_end_s("month", buckets.month, zone) > cutoffs["month"]


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2037, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 62 * 86_400),
    st.sampled_from(list(WindowLength)),
)
def test_a_window_from_the_horizon_on_reads_no_expired_bucket(
    watermark: datetime, after_s: int, length: WindowLength
) -> None:
    kept = policy()
    horizon = kept.window_horizon_s(to_us(watermark))
    window = window_ending(length, datetime.fromtimestamp(horizon + after_s, UTC) + timedelta(minutes=length.minutes))
    cutoffs = kept.cutoffs(to_us(watermark))
    if window.start_minute * 60 < horizon:
        return  # rounded down to the minute before the horizon: the API refuses it
    for granularity, label in window.buckets():
        stored = minute_location(label)[0] if granularity == "minute" else label
        assert bucket_end_s(granularity, stored, ZoneInfo("UTC")) > cutoffs[granularity]


def test_every_bucket_granularity_has_a_cutoff() -> None:
    assert set(BUCKET_GRANULARITIES) < set(policy().cutoffs(0))


@settings(max_examples=200, deadline=None)
@given(
    instant=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)),
    zone=st.sampled_from(ZONES),
)
def test_expanded_buckets_end_where_their_labels_say(instant: datetime, zone: ZoneInfo) -> None:
    # expand_cells scores each bucket by an end it computes from the minute; the sweeper and the
    # bench's state check parse it back from the stored label: the two must agree.
    cells: Cells = {(("m:ann", "c:"), to_us(instant) // 60_000_000): {"calls": 1}}
    contributions, ends = expand_cells(cells, Calendar(zone))
    assert {(granularity, label) for _, granularity, label in contributions} == set(ends)
    assert {granularity for granularity, _ in ends} == set(BUCKET_GRANULARITIES)
    for (granularity, label), end in ends.items():
        assert end == bucket_end_s(granularity, label, zone)
        assert end > instant.timestamp()
    assert minute_location(Calendar(zone).buckets(to_us(instant)).minute)[0] in {
        label for granularity, label in ends if granularity == "minute"
    }


MINUTES_2026 = st.integers(epoch("2026-03-01T00:00:00+00:00") // 60, epoch("2026-03-20T00:00:00+00:00") // 60)


@settings(max_examples=200, deadline=None)
@given(
    minutes=st.lists(st.tuples(st.sampled_from([("m:ann", "c:"), ("m:bob", "t:x", "c:")]), MINUTES_2026), max_size=40),
    cuts=st.fixed_dictionaries({g: MINUTES_2026.map(lambda minute: minute * 60) for g in BUCKET_GRANULARITIES}),
    zone=st.sampled_from(ZONES),
)
def test_cutoffs_leave_out_exactly_the_buckets_ending_at_or_before_them(
    minutes: list[tuple[tuple[str, ...], int]], cuts: dict[str, int], zone: ZoneInfo
) -> None:
    # Cut or not, every bucket left holds what it holds uncut: a coarser bucket still sums the finer
    # ones that expired before it (an hour past its cutoff in a UTC day that is not).
    cells: Cells = {(scopes, minute): {"calls": 1, "call_duration_s": minute % 7} for scopes, minute in minutes}
    whole, whole_ends = expand_cells(cells, Calendar(zone))
    cut, cut_ends = expand_cells(cells, Calendar(zone), cuts)
    assert cut == {bucket: fields for bucket, fields in whole.items() if whole_ends[bucket[1:]] > cuts[bucket[1]]}
    assert cut_ends == {bucket: end for bucket, end in whole_ends.items() if end > cuts[bucket[0]]}
