"""Working days and hours in the business time zone: when simulated people do things.

Times are kept as integer milliseconds since the Unix epoch (UTC), which order and add
cheaply; they become local wall-clock time only when sampled or formatted.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS_PER_HOUR = 3_600_000

DAY_START_HOUR = 9
DAY_END_HOUR = 18
HOUR_WEIGHTS: tuple[tuple[int, float], ...] = (
    (9, 0.75),
    (10, 1.0),
    (11, 1.05),
    (12, 0.5),  # lunch dip
    (13, 0.6),
    (14, 1.0),
    (15, 1.05),
    (16, 0.95),
    (17, 0.7),
)
"""Relative activity per local hour of a working day (9:00-18:00)."""

_HOURS = tuple(hour for hour, _ in HOUR_WEIGHTS)
_CUMULATIVE = tuple(itertools.accumulate(weight for _, weight in HOUR_WEIGHTS))
_TOTAL_WEIGHT = _CUMULATIVE[-1]
_NAIVE_EPOCH = datetime(1970, 1, 1)
_QUARTER_HOUR_MS = 900_000


def to_ms(moment: datetime) -> int:
    """An aware datetime as epoch milliseconds."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


@dataclass(frozen=True)
class BusinessCalendar:
    """Working days (Monday to Friday) and hours (9:00 to 18:00) in one IANA time zone."""

    zone: ZoneInfo
    # Caches: the instants of a day's working hours, and the UTC offset of each quarter hour
    # (every time-zone transition falls on a quarter hour).
    _hour_starts: dict[date, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)
    _offsets: dict[int, tuple[int, str]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def named(cls, timezone_name: str) -> BusinessCalendar:
        return cls(zone=ZoneInfo(timezone_name))

    @staticmethod
    def is_working_day(day: date) -> bool:
        return day.weekday() < 5

    def local_date(self, ms: int) -> date:
        return (_NAIVE_EPOCH + timedelta(milliseconds=ms + self._offset(ms)[0])).date()

    def local_ms(self, day: date, hour: int) -> int:
        """The instant of a whole local hour on a day (hours 9-18 never fall in a DST gap)."""
        return to_ms(datetime(day.year, day.month, day.day, hour, tzinfo=self.zone))

    def midnight_ms(self, day: date) -> int:
        return self.local_ms(day, 0)

    def day_end_ms(self, day: date) -> int:
        return self._working_hours(day)[-1]

    def add_working_days(self, day: date, count: int) -> date:
        """The working day ``count`` working days after ``day`` (count >= 1)."""
        while count > 0:
            day += timedelta(days=1)
            if self.is_working_day(day):
                count -= 1
        return day

    def sample_ms(self, rng: random.Random, day: date) -> int:
        """A random instant in the working hours of ``day``, shaped by HOUR_WEIGHTS."""
        slot = bisect.bisect(_CUMULATIVE, rng.random() * _TOTAL_WEIGHT)
        return self._working_hours(day)[slot] + int(rng.random() * MS_PER_HOUR)

    def sample_after_ms(self, rng: random.Random, after_ms: int, *, max_gap_ms: int) -> int:
        """An instant shortly after ``after_ms`` that stays before the end of its working day."""
        room = self.day_end_ms(self.local_date(after_ms)) - after_ms - 1
        return after_ms + 1 + rng.randrange(min(max_gap_ms, room)) if room > 0 else after_ms

    def format(self, ms: int, *, utc: bool) -> str:
        """RFC 3339 with milliseconds: in UTC with ``Z``, or in local time with its offset."""
        if utc:
            return (_NAIVE_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds") + "Z"
        offset_ms, suffix = self._offset(ms)
        return (_NAIVE_EPOCH + timedelta(milliseconds=ms + offset_ms)).isoformat(timespec="milliseconds") + suffix

    def _working_hours(self, day: date) -> tuple[int, ...]:
        starts = self._hour_starts.get(day)
        if starts is None:
            if len(self._hour_starts) > 4_096:
                self._hour_starts.clear()
            starts = tuple(self.local_ms(day, hour) for hour in (*_HOURS, DAY_END_HOUR))
            self._hour_starts[day] = starts
        return starts

    def _offset(self, ms: int) -> tuple[int, str]:
        quarter = ms // _QUARTER_HOUR_MS
        cached = self._offsets.get(quarter)
        if cached is None:
            if len(self._offsets) > 65_536:
                self._offsets.clear()
            offset = from_ms(quarter * _QUARTER_HOUR_MS).astimezone(self.zone).utcoffset() or timedelta(0)
            sign = "-" if offset < timedelta(0) else "+"
            minutes = abs(offset) // timedelta(minutes=1)
            cached = (offset // timedelta(milliseconds=1), f"{sign}{minutes // 60:02d}:{minutes % 60:02d}")
            self._offsets[quarter] = cached
        return cached
