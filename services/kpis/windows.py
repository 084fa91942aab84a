"""Rolling windows (last 1 h, 24 h, 7 d, 30 d) and the UTC-aligned buckets that add up to them.

A window of length W ending at ``as_of`` counts the events with ``occurred_at`` in [m - W, m),
where m is ``as_of`` rounded down to the whole UTC minute. Windows resolve to the minute because
the state is kept per minute: minute, hour and UTC-day buckets (aligned in UTC, unlike the local
day and month buckets of calendar periods), so every window is an exact union of stored buckets:
its whole UTC days, then whole hours, then loose minutes, at each end.

Bucket labels: minute ``2026-11-27T10:05``, hour ``2026-11-27T10``, UTC day ``2026-11-27``.

Minutes are stored by the hour: the minutes of one UTC hour share one hash (labelled with the hour),
whose fields are ``MM/measure`` (``05/calls``). Most minutes of a scope hold an event or two, so a
hash per minute would cost a key, a time-index entry and a write for nearly every event; by the
hour, a window's loose minutes are also read from one or two hashes rather than up to 118.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

WindowGranularity = Literal["utcday", "hour", "minute"]
"""The UTC-aligned bucket granularities that rolling windows are read from."""

WINDOW_GRANULARITIES: tuple[WindowGranularity, ...] = ("utcday", "hour", "minute")

MINUTES_PER_HOUR = 60
MINUTES_PER_DAY = 24 * MINUTES_PER_HOUR
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_MINUTE = 60 * 1_000_000


class WindowLength(StrEnum):
    """The rolling windows of the contract."""

    HOUR = "1h"
    DAY = "24h"
    WEEK = "7d"
    MONTH = "30d"

    @property
    def minutes(self) -> int:
        return _LENGTH_MINUTES[self]


_LENGTH_MINUTES = {
    WindowLength.HOUR: MINUTES_PER_HOUR,
    WindowLength.DAY: MINUTES_PER_DAY,
    WindowLength.WEEK: 7 * MINUTES_PER_DAY,
    WindowLength.MONTH: 30 * MINUTES_PER_DAY,
}


def epoch_minute(instant: datetime) -> int:
    """The whole UTC minute containing an aware instant, as minutes since the epoch (floored)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"a naive time has no place on the time line: {instant.isoformat()}; give its UTC offset")
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) // 60


def epoch_minute_of_us(t_us: int) -> int:
    """The whole UTC minute containing an instant given in microseconds since the epoch."""
    return t_us // _US_PER_MINUTE


def minute_start(minute: int) -> datetime:
    return _EPOCH + timedelta(minutes=minute)


def utcday_label(day: int) -> str:
    """Label of the UTC day ``day`` (days since the epoch): ``2026-11-27``."""
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def hour_label(hour: int) -> str:
    """Label of the UTC hour ``hour`` (hours since the epoch): ``2026-11-27T10``."""
    return (_EPOCH + timedelta(hours=hour)).strftime("%Y-%m-%dT%H")


def minute_label(minute: int) -> str:
    """Label of the UTC minute ``minute`` (minutes since the epoch): ``2026-11-27T10:05``."""
    return (_EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M")


MINUTE_FIELD_SEP = "/"
MINUTE_PREFIXES: tuple[str, ...] = tuple(f"{minute:02d}{MINUTE_FIELD_SEP}" for minute in range(MINUTES_PER_HOUR))
"""The field prefix of each minute of the hour in a stored minute hash."""


def minute_location(label: str) -> tuple[str, str]:
    """Where a minute bucket (label ``2026-11-27T10:05``) is stored: the label of its hour's minute
    hash (``2026-11-27T10``) and the prefix of its fields there (``05/``)."""
    return label[:13], label[14:16] + MINUTE_FIELD_SEP


def window_bucket_span(granularity: WindowGranularity, label: str) -> tuple[int, int]:
    """The [start, end) epoch minutes a UTC-aligned bucket covers, from its label."""
    if granularity == "utcday":
        start = epoch_minute(datetime.strptime(label, "%Y-%m-%d").replace(tzinfo=UTC))
        return start, start + MINUTES_PER_DAY
    if granularity == "hour":
        start = epoch_minute(datetime.strptime(label, "%Y-%m-%dT%H").replace(tzinfo=UTC))
        return start, start + MINUTES_PER_HOUR
    start = epoch_minute(datetime.strptime(label, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC))
    return start, start + 1


def minute_buckets(start: int, end: int) -> list[tuple[WindowGranularity, str]]:
    """The fewest UTC-aligned buckets whose union is exactly [start, end) (epoch minutes).

    Taking, from the left, the largest aligned bucket that fits gives loose minutes up to the
    first whole hour, whole hours up to the first whole UTC day, whole days, then hours and
    minutes again: no decomposition into aligned days, hours and minutes has fewer pieces.
    """
    out: list[tuple[WindowGranularity, str]] = []
    at = start
    while at < end:
        if at % MINUTES_PER_DAY == 0 and at + MINUTES_PER_DAY <= end:
            out.append(("utcday", utcday_label(at // MINUTES_PER_DAY)))
            at += MINUTES_PER_DAY
        elif at % MINUTES_PER_HOUR == 0 and at + MINUTES_PER_HOUR <= end:
            out.append(("hour", hour_label(at // MINUTES_PER_HOUR)))
            at += MINUTES_PER_HOUR
        else:
            out.append(("minute", minute_label(at)))
            at += 1
    return out


@dataclass(frozen=True)
class Window:
    """A rolling window: the ``length`` minutes before ``end_minute`` (an epoch minute, exclusive)."""

    length: WindowLength
    end_minute: int

    @property
    def start_minute(self) -> int:
        return self.end_minute - self.length.minutes

    @property
    def start(self) -> datetime:
        """First instant counted (inclusive)."""
        return minute_start(self.start_minute)

    @property
    def end(self) -> datetime:
        """First instant not counted (exclusive)."""
        return minute_start(self.end_minute)

    def previous(self) -> Window:
        """The window of the same length just before this one."""
        return Window(self.length, self.start_minute)

    def buckets(self) -> list[tuple[WindowGranularity, str]]:
        """The (granularity, label) of the fewest stored buckets whose union is exactly this window."""
        return minute_buckets(self.start_minute, self.end_minute)


def window_ending(length: WindowLength, as_of: datetime) -> Window:
    """The window of this length ending at ``as_of`` rounded down to the whole UTC minute."""
    return Window(length, epoch_minute(as_of))


def stored_reads(window: Window) -> list[tuple[WindowGranularity, str, frozenset[str] | None]]:
    """The stored hashes a window is the sum of: (granularity, stored label, and for an hour's minute
    hash the field prefixes of the window's minutes in it, None for a whole hash)."""
    reads: list[tuple[WindowGranularity, str, frozenset[str] | None]] = []
    minutes: dict[str, set[str]] = {}
    for granularity, label in window.buckets():
        if granularity == "minute":
            hour, prefix = minute_location(label)
            minutes.setdefault(hour, set()).add(prefix)
        else:
            reads.append((granularity, label, None))
    reads.extend(("minute", hour, frozenset(prefixes)) for hour, prefixes in minutes.items())
    return reads


def minutes_of(raw: Mapping[bytes | str, bytes | str] | Mapping[str, int], prefixes: frozenset[str]) -> dict[str, int]:
    """The measures of some minutes of an hour's minute hash, summed (fields ``MM/measure``)."""
    total: dict[str, int] = {}
    for key, value in raw.items():
        field = key.decode() if isinstance(key, bytes) else key
        if field[:3] in prefixes:
            measure = field[3:]
            total[measure] = total.get(measure, 0) + int(value)
    return total
