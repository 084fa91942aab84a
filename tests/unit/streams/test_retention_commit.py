"""What a batch tells the retention indexes, and the deltas it leaves out because their bucket expired."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.kpis.contributions import to_us
from services.kpis.retention import bucket_end_s, deal_end_s
from services.settings import Settings
from streams.processor import BatchProcessor, DeadLetter, RawRecord
from tests.unit.streams.fake_store import FakeStore

SETTINGS = Settings()
ZONE = ZoneInfo("UTC")
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def event(event_id: str, kind: str, at: datetime, **fields: Any) -> bytes:
    body = {"event_id": event_id, "type": kind, "occurred_at": at.isoformat(), "manager_id": "ann", **fields}
    return json.dumps(body).encode()


def apply(store: FakeStore, *batches: list[bytes]) -> None:
    async def sink(letters: list[DeadLetter]) -> None:
        raise AssertionError(f"unexpected rejects: {[letter.rejection for letter in letters]}")

    processor = BatchProcessor(SETTINGS, store, sink)  # type: ignore[arg-type]
    offset = store.offsets_by_tp.get("crm.events:0", 0)

    async def feed() -> None:
        nonlocal offset
        for batch in batches:
            records = []
            for value in batch:
                records.append(RawRecord("crm.events", 0, offset, int(NOW.timestamp() * 1000), None, value))
                offset += 1
            await processor.process(records)

    asyncio.run(feed())


def test_a_late_event_past_the_window_retention_counts_for_its_day_but_writes_no_window_bucket() -> None:
    store = FakeStore()
    late = NOW - timedelta(days=100, hours=3)  # within the 730-day history, beyond the 62 days of minutes
    apply(store, [event("e1", "call", NOW)], [event("e2", "call", late)])
    assert store.buckets[("m:ann", "day", late.date().isoformat())] == {"calls": 1}
    assert store.buckets[("m:ann", "month", late.strftime("%Y-%m"))] == {"calls": 1}
    assert not [key for key in store.buckets if key[2].startswith(late.strftime("%Y-%m-%d")) and key[1] != "day"]
    assert ("minute", late.strftime("%Y-%m-%dT%H")) not in store.bucket_index
    assert store.bucket_index[("day", late.date().isoformat())] == bucket_end_s("day", late.date().isoformat(), ZONE)
    # The recent event has all five buckets, each indexed with its end.
    for granularity, label in [
        ("day", "2026-11-27"),
        ("month", "2026-11"),
        ("utcday", "2026-11-27"),
        ("hour", "2026-11-27T12"),
        ("minute", "2026-11-27T12"),  # the hash of the hour's minutes
    ]:
        fields = {"00/calls": 1} if granularity == "minute" else {"calls": 1}
        assert store.buckets[("m:ann", granularity, label)] == fields
        assert store.bucket_index[(granularity, label)] == bucket_end_s(granularity, label, ZONE)


def test_the_same_late_event_in_the_same_batch_as_the_new_watermark_is_also_left_out_of_minutes() -> None:
    store = FakeStore()
    late = NOW - timedelta(days=70)
    apply(store, [event("e1", "call", NOW), event("e2", "call", late)])
    assert ("m:ann", "minute", late.strftime("%Y-%m-%dT%H")) not in store.buckets
    assert store.buckets[("m:ann", "day", late.date().isoformat())] == {"calls": 1}


def test_only_deals_outside_the_open_pipeline_are_indexed_for_expiry() -> None:
    store = FakeStore()
    created = {"customer_id": "acme", "amount": "100.00"}
    t0 = NOW - timedelta(days=5)
    apply(
        store,
        [
            event("a1", "deal_created", t0, deal_id="open", **created),
            event("b1", "deal_created", t0, deal_id="won", **created),
            event("b2", "deal_won", t0 + timedelta(days=1), deal_id="won"),
            event("c1", "deal_stage_changed", t0, deal_id="orphan", stage="qualified"),
        ],
    )
    keys = store.keys
    assert keys.deal("open") not in store.deal_index
    assert store.deal_index[keys.deal("won")] == deal_end_s(to_us(t0 + timedelta(days=1)))
    # A deal whose deal_created is unknown is not in the pipeline either.
    assert store.deal_index[keys.deal("orphan")] == deal_end_s(to_us(t0))
    # A later stage change reopens the won deal: it is current state again and leaves the index.
    apply(store, [event("b3", "deal_stage_changed", t0 + timedelta(days=2), deal_id="won", stage="proposal")])
    assert keys.deal("won") not in store.deal_index
