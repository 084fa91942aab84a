"""Replay's batches cut by time across partitions: every record once, each partition's in offset order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.processor import RawRecord
from streams.replay import _TimeAlignedBatches

PARTITIONS = st.lists(st.lists(st.integers(0, 50), max_size=40), min_size=1, max_size=4)
"""Per partition, the steps between its records' timestamps (a partition's timestamps never go back)."""


def records_of(steps: list[list[int]]) -> dict[int, list[RawRecord]]:
    out: dict[int, list[RawRecord]] = {}
    for partition, gaps in enumerate(steps):
        at = 0
        out[partition] = []
        for offset, gap in enumerate(gaps):
            at += gap
            out[partition].append(RawRecord("t", partition, offset, at, None, b""))
    return out


@settings(max_examples=300, deadline=None)
@given(PARTITIONS, st.integers(1, 30), st.sets(st.integers(0, 3)))
def test_every_record_is_taken_once_in_offset_order_earliest_first(
    steps: list[list[int]], size: int, reading: set[int]
) -> None:
    by_partition = records_of(steps)
    ahead = _TimeAlignedBatches()
    for partition, records in by_partition.items():
        ahead.add(partition, records)
    taken: list[RawRecord] = []
    while ahead.buffered:
        left = [record for buffer in ahead.buffers.values() for record in buffer]
        tails = [ahead.buffers[p][-1].timestamp_ms for p in reading if ahead.buffers.get(p)]
        batch = ahead.take(size, reading)
        assert 0 < len(batch) <= size
        rest = [r for r in left if r not in batch]
        # The earliest records left, by timestamp (ties in any order).
        assert max(r.timestamp_ms for r in batch) <= min((r.timestamp_ms for r in rest), default=10**9)
        # None later than the last record buffered of a partition still being read (its next records
        # may be earlier than that), unless even the earliest record left is later.
        if tails and min(r.timestamp_ms for r in left) <= min(tails):
            assert max(r.timestamp_ms for r in batch) <= min(tails)
        taken += batch
    for partition, records in by_partition.items():
        assert [r for r in taken if r.partition == partition] == records
