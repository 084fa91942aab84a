"""Parsing the worker's change-feed entries."""

from __future__ import annotations

import json

import pytest

from dashboard_api.changes import parse_change_entry, seq_key
from dashboard_api.errors import ChangeFeedError


def test_an_entry_parses_into_buckets_and_current_state() -> None:
    data = {
        "produced_ms": 1_795_000_000_000,
        "committed_ms": 1_795_000_000_120,
        "buckets": [{"scope": "m:alice", "g": "day", "b": "2026-11-27", "m": {"calls": "12", "revenue": "50000"}}],
        "current": [{"scope": "c", "m": {"pipe_n:new": "3"}}],
    }

    entry = parse_change_entry(b"1795000000120-0", {b"data": json.dumps(data).encode()})

    assert entry.seq == "1795000000120-0"
    assert entry.produced_ms == 1_795_000_000_000
    assert entry.committed_ms == 1_795_000_000_120
    [bucket] = entry.buckets
    assert (bucket.scope, bucket.granularity, bucket.bucket) == ("m:alice", "day", "2026-11-27")
    assert bucket.measures == {"calls": 12, "revenue": 50000}
    assert entry.current[0].measures == {"pipe_n:new": 3}


def test_missing_sections_and_emptied_hashes() -> None:
    # The worker's Lua (cjson) leaves out empty sections and may encode an empty hash as [].
    entry = parse_change_entry(
        "5-1",
        {"data": json.dumps({"produced_ms": 1, "buckets": [{"scope": "c", "g": "month", "b": "2026-11", "m": []}]})},
    )

    assert entry.current == ()
    assert entry.buckets[0].measures == {}
    assert entry.committed_ms is None


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"data": "not json"},
        {"data": json.dumps({"buckets": [{"scope": "c", "g": "week", "b": "2026-W48", "m": {}}]})},
        {"data": json.dumps({"buckets": [{"scope": "c", "g": "day", "b": "2026-11-27", "m": {"calls": "x"}}]})},
        {"data": json.dumps({"buckets": [{"scope": "c"}]})},
    ],
)
def test_malformed_entries_raise_change_feed_error(fields: dict[str, str]) -> None:
    with pytest.raises(ChangeFeedError, match="7-0"):
        parse_change_entry("7-0", fields)


def test_sequence_numbers_compare_numerically() -> None:
    assert seq_key("1795000000120-10") > seq_key("1795000000120-9")
    assert seq_key("1795000000121-0") > seq_key("1795000000120-99")
    assert seq_key("0-0") == (0, 0)
    with pytest.raises(ChangeFeedError):
        seq_key("latest")
