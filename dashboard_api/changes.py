"""Entries of the worker's change feed (Redis stream ``RedisKeys.changes``), parsed.

Each entry has one field ``data`` holding JSON: ``produced_ms`` (earliest Kafka timestamp of
the batch), ``committed_ms``, ``buckets`` (scope, granularity, bucket and the full new
measures of every touched bucket hash) and ``current`` (the same for open-pipeline hashes).
The stream entry id is the change sequence number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dashboard_api.errors import ChangeFeedError
from services.kpis.measures import Measures, decode_hash
from services.topics import Granularity

SeqKey = tuple[int, int]
"""A stream id as a comparable pair (milliseconds, sequence)."""


def seq_key(seq: str) -> SeqKey:
    """``"1732665600000-3"`` as ``(1732665600000, 3)``, so sequence numbers compare in order."""
    millis, _, counter = seq.partition("-")
    try:
        return int(millis), int(counter or 0)
    except ValueError:
        raise ChangeFeedError(f"{seq!r} is not a Redis stream id like 1732665600000-0") from None


@dataclass(frozen=True)
class BucketChange:
    scope: str
    granularity: Granularity
    bucket: str
    measures: Measures


@dataclass(frozen=True)
class CurrentChange:
    scope: str
    measures: Measures


@dataclass(frozen=True)
class ChangeEntry:
    seq: str
    produced_ms: int | None
    committed_ms: int | None
    buckets: tuple[BucketChange, ...]
    current: tuple[CurrentChange, ...]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _millis(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _measures(raw: Any) -> Measures:
    # cjson encodes an emptied hash as {} or, from an empty Lua table, possibly as [].
    if isinstance(raw, list) and not raw:
        return {}
    if not isinstance(raw, dict):
        raise ChangeFeedError(f"measures must be an object of integer strings, got {raw!r:.100}")
    return decode_hash(raw)


def parse_change_entry(entry_id: bytes | str, fields: Mapping[Any, Any]) -> ChangeEntry:
    """One stream entry as a :class:`ChangeEntry`; raise ChangeFeedError if it is malformed."""
    seq = _text(entry_id)
    data = fields.get("data", fields.get(b"data"))
    if data is None:
        raise ChangeFeedError(f"change {seq} has no 'data' field")
    try:
        payload = json.loads(data)
        buckets = tuple(
            BucketChange(
                scope=str(item["scope"]), granularity=item["g"], bucket=str(item["b"]), measures=_measures(item["m"])
            )
            for item in payload.get("buckets") or ()
        )
        current = tuple(
            CurrentChange(scope=str(item["scope"]), measures=_measures(item["m"]))
            for item in payload.get("current") or ()
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ChangeFeedError(f"change {seq} is malformed: {exc!r}") from None
    for change in buckets:
        if change.granularity not in ("day", "month"):
            raise ChangeFeedError(f"change {seq} has bucket granularity {change.granularity!r}; expected day or month")
    return ChangeEntry(
        seq=seq,
        produced_ms=_millis(payload.get("produced_ms")),
        committed_ms=_millis(payload.get("committed_ms")),
        buckets=buckets,
        current=current,
    )
