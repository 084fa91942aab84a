"""The streaming batch logic equals the batch reference for any arrival order, duplicates and batching."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.kpis.contributions import CURRENT, to_us
from services.kpis.measures import sum_measures
from services.kpis.periods import PeriodKind, period_of
from services.kpis.reference import ReferenceKpis, admit, window_bounds
from services.kpis.retention import RetentionPolicy, bucket_end_s
from services.kpis.windows import (
    MINUTE_PREFIXES,
    WINDOW_GRANULARITIES,
    WindowLength,
    minute_start,
    minutes_of,
    stored_reads,
    window_bucket_span,
    window_ending,
)
from services.schemas.events import ValidationPolicy
from services.settings import Settings
from streams.processor import BatchProcessor, DeadLetter, RawRecord
from tests.unit.streams.fake_store import FakeStore

SETTINGS = Settings(business={"timezone": "America/New_York"})
POLICY = ValidationPolicy.from_settings(SETTINGS.business)
START = datetime(2026, 3, 6, 12, tzinfo=UTC)  # spans the DST change of 2026-03-08 in New York
NOW_MS = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp() * 1000)
STAGES = [stage.name for stage in SETTINGS.business.funnel]


@st.composite
def crm_event(draw: st.DrawFn, index: int) -> dict[str, object]:
    kind = draw(
        st.sampled_from(
            ["call", "meeting", "proposal_sent", "deal_created", "deal_stage_changed", "deal_won", "deal_lost"]
        )
    )
    event: dict[str, object] = {
        "event_id": f"e{index:04d}",
        "type": kind,
        "occurred_at": (START + timedelta(minutes=draw(st.integers(0, 4 * 24 * 60)))).isoformat(),
        "manager_id": draw(st.sampled_from(["ann", "bob", "cid"])),
    }
    if draw(st.booleans()) or kind.startswith("deal"):
        event["team_id"] = draw(st.sampled_from(["north", "south", None]))
    money = st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False, allow_infinity=False).map(str)
    if kind.startswith("deal"):
        event["deal_id"] = draw(st.sampled_from(["d1", "d2", "d3", "d4", "d5"]))
    if kind == "call":
        event["duration_s"] = draw(st.one_of(st.none(), st.integers(0, 3600)))
    if kind == "deal_created":
        event["customer_id"] = draw(st.sampled_from(["acme", "globex", "initech"]))
        event["amount"] = draw(money)
        event["stage"] = draw(st.one_of(st.none(), st.sampled_from(STAGES)))
        event["lead_source"] = draw(st.one_of(st.none(), st.sampled_from(["web", "referral"])))
    if kind == "deal_stage_changed":
        event["stage"] = draw(st.sampled_from(STAGES))
        event["amount"] = draw(st.one_of(st.none(), money))
    if kind == "deal_won":
        event["amount"] = draw(st.one_of(st.none(), money))
    if kind == "deal_lost":
        event["lost_reason"] = draw(st.one_of(st.none(), st.sampled_from(["price", "timing"])))
    return {key: value for key, value in event.items() if value is not None}


@st.composite
def arrival(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    count = draw(st.integers(1, 40))
    events = [draw(crm_event(index)) for index in range(count)]
    records = [json.dumps(event).encode() for event in events]
    # Re-sends: exact copies, and same event_id with other content (the first accepted wins).
    for _ in range(draw(st.integers(0, 6))):
        original = draw(st.sampled_from(events))
        if draw(st.booleans()):
            records.append(json.dumps(original).encode())
        else:
            altered = dict(draw(crm_event(0)), event_id=original["event_id"])
            records.append(json.dumps(altered).encode())
    # Events at the edges of the time checks, to the microsecond: just within, on and past the
    # future tolerance (24 h after the records' timestamp) and the history retention (730 days before
    # another event, which may or may not be the watermark by then).
    for index in range(draw(st.integers(0, 3))):
        nudge = timedelta(microseconds=draw(st.integers(-1, 1)))
        if draw(st.booleans()):
            at = datetime.fromtimestamp(NOW_MS / 1000, UTC) + timedelta(hours=24) + nudge
        else:
            at = datetime.fromisoformat(str(draw(st.sampled_from(events))["occurred_at"])) - timedelta(days=730) + nudge
        records.append(json.dumps({**draw(crm_event(900 + index)), "occurred_at": at.isoformat()}).encode())
    records.append(b'{"event_id": "bad", "type": "call"}')
    records = draw(st.permutations(records))
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=6)))
    return list(records), cuts


def run_stream(records: list[bytes], cuts: list[int]) -> tuple[FakeStore, list[DeadLetter]]:
    store = FakeStore()
    dead: list[DeadLetter] = []

    async def sink(letters: list[DeadLetter]) -> None:
        dead.extend(letters)

    processor = BatchProcessor(SETTINGS, store, sink)  # type: ignore[arg-type]
    raw = [RawRecord("crm.events", 0, offset, NOW_MS, None, value) for offset, value in enumerate(records)]
    bounds = [0, *cuts, len(raw)]

    async def feed() -> None:
        for first, last in itertools.pairwise(bounds):
            if last > first:
                await processor.process(raw[first:last])

    asyncio.run(feed())
    return store, dead


WINDOWS = st.lists(
    st.tuples(st.sampled_from(list(WindowLength)), st.integers(0, 10**6), st.booleans(), st.integers(-150, 150)),
    min_size=1,
    max_size=6,
)
"""Rolling windows (length, event pick, anchored at the window's start?, seconds off): each window ends, or
starts, within a few minutes of an accepted event, so the loose minutes at both ends are exercised."""


@settings(max_examples=300, deadline=None)
@given(arrival(), WINDOWS)
def test_streaming_state_equals_reference(
    case: tuple[list[bytes], list[int]], windows: list[tuple[WindowLength, int, bool, int]]
) -> None:
    records, cuts = case
    store, dead = run_stream(records, cuts)
    now = datetime.fromtimestamp(NOW_MS / 1000, UTC)
    admission = admit(records, POLICY, now=now)
    reference = ReferenceKpis(admission.accepted, SETTINGS.business.zone)

    assert store.stats.get("processed", 0) == len(admission.accepted)
    assert store.stats.get("duplicates", 0) == admission.duplicates
    assert sorted(letter.record.offset for letter in dead) == [index for index, _ in admission.rejected]

    # What the retention expires at the end (an event accepted 730 days before the watermark of its
    # time, and then one at the end of the future tolerance) may be left out: it is not compared.
    watermark_us = max((to_us(event.occurred_at) for event in admission.accepted), default=0)
    retention = RetentionPolicy.from_settings(SETTINGS)
    cutoffs, horizon_s = retention.cutoffs(watermark_us), retention.window_horizon_s(watermark_us)
    zone = SETTINGS.business.zone
    for scope in reference.scopes() | {scope for scope, _, _ in store.buckets}:
        for day in reference.days():
            if bucket_end_s("day", day.isoformat(), zone) > cutoffs["day"]:
                expected = reference.measures(scope, period_of(PeriodKind.DAY, day))
                assert store.buckets.get((scope, "day", day.isoformat()), {}) == expected, (scope, day)
            month = period_of(PeriodKind.MONTH, day)
            if bucket_end_s("month", month.label, zone) > cutoffs["month"]:
                assert store.buckets.get((scope, "month", month.label), {}) == reference.measures(scope, month)
        assert store.buckets.get((scope, CURRENT, ""), {}) == {
            k: v for k, v in reference.current.get(scope, {}).items() if v
        }
        for length, pick, at_start, off_s in windows if admission.accepted else []:
            anchor = admission.accepted[pick % len(admission.accepted)].occurred_at
            as_of = anchor + timedelta(seconds=off_s, minutes=length.minutes if at_start else 0)
            window = window_ending(length, as_of)
            start, end = window_bounds(str(length), as_of)
            assert (window.start, window.end) == (start, end)
            if window.start_minute * 60 < horizon_s:
                continue  # its minutes, hours or UTC days are past their retention: the API refuses it
            streamed = sum_measures(
                store.buckets.get((scope, g, label), {})
                if prefixes is None
                else minutes_of(store.buckets.get((scope, g, label), {}), prefixes)
                for g, label, prefixes in stored_reads(window)
            )
            assert {k: v for k, v in streamed.items() if v} == reference.window_measures(scope, start, end), (
                scope,
                length,
                as_of,
            )

    # Every minute (in its hour's hash), hour and UTC-day bucket holds exactly the events of its span,
    # and every bucket is in the time index with its end.
    for (scope, granularity, bucket), values in store.buckets.items():
        if granularity != CURRENT and bucket_end_s(granularity, bucket, zone) <= cutoffs[granularity]:
            continue  # written before the watermark passed it, to be swept: it may hold a fragment
        if granularity == "minute":
            first = window_bucket_span("hour", bucket)[0]
            for minute, prefix in enumerate(MINUTE_PREFIXES):
                expected = reference.window_measures(
                    scope, minute_start(first + minute), minute_start(first + minute + 1)
                )
                assert minutes_of(values, frozenset((prefix,))) == expected, (scope, bucket, minute)
        elif granularity in WINDOW_GRANULARITIES:
            first, last = window_bucket_span(granularity, bucket)
            expected = reference.window_measures(scope, minute_start(first), minute_start(last))
            assert values == expected, (scope, granularity, bucket)
        if granularity != CURRENT:
            assert store.bucket_index[(granularity, bucket)] == bucket_end_s(
                granularity, bucket, SETTINGS.business.zone
            )


def test_redelivered_batch_is_not_counted_twice() -> None:
    records = [
        json.dumps(
            {"event_id": f"c{i}", "type": "call", "occurred_at": "2026-03-07T15:00:00Z", "manager_id": "ann"}
        ).encode()
        for i in range(5)
    ]
    store = FakeStore()

    async def sink(letters: list[DeadLetter]) -> None:
        raise AssertionError("no rejects expected")

    processor = BatchProcessor(SETTINGS, store, sink)  # type: ignore[arg-type]
    raw = [RawRecord("crm.events", 0, offset, NOW_MS, None, value) for offset, value in enumerate(records)]

    async def feed() -> None:
        await processor.process(raw[:3])
        result = await processor.process(raw)  # a restarted consumer sees the first three again
        assert result.skipped == 3

    asyncio.run(feed())
    assert store.buckets[("m:ann", "day", "2026-03-07")]["calls"] == 5
