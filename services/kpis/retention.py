"""How long the state keeps each kind of bucket and deal history: pure retention arithmetic.

Time here is event time: the reference instant is the watermark (the highest accepted
``occurred_at``), the same instant the ``too_old`` check measures from, so a history import
ages the state exactly as live traffic would, and a stopped feed ages nothing.

Every bucket has an end instant (epoch seconds): the end of its hour (for the hash of an hour's
minutes, too), UTC day, local day or local month. A bucket is expired when its end is at or before its granularity's
cutoff, ``watermark - kept``; so is a deal history (of a deal not in the open pipeline) whose
latest event is. What is kept, by default:

| what | kept | why |
| --- | --- | --- |
| local-day buckets | history retention (730 d) + 7 d | events older than the retention are rejected (``too_old``) |
| local-month buckets | 26 months, the watermark's included | cover the 730 d retention with a month to spare |
| UTC-day, hour, minute buckets | 62 d | a 30 d window and its previous 30 d window, with 2 d to spare |
| deal histories (closed, or never created) | history retention + 7 d | a later event of the deal would be too old |
| event-id claims | history retention + 2 d of wall-clock TTL | set on the key by the commit |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.kpis.windows import WINDOW_GRANULARITIES, window_bucket_span
from services.settings import Settings

BucketGranularity = str
"""'day' | 'month' (local, business time zone) | 'utcday' | 'hour' | 'minute' (UTC)."""

DEAL = "deal"
"""The cutoff key of deal histories."""

SECONDS_PER_DAY = 86_400


def local_midnight_s(day: date, zone: ZoneInfo) -> int:
    """Epoch seconds of local midnight starting ``day`` (zones whose midnight is skipped by a DST
    change are off by that hour; expiry margins are days, so it does not matter)."""
    return int(datetime.combine(day, time(), tzinfo=zone).timestamp())


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def bucket_end_s(granularity: BucketGranularity, label: str, zone: ZoneInfo) -> int:
    """The end (exclusive, epoch seconds) of a stored bucket, from its granularity and label."""
    if granularity == "day":
        return local_midnight_s(date.fromisoformat(label) + timedelta(days=1), zone)
    if granularity == "month":
        year, month = label.split("-")
        return local_midnight_s(_next_month(date(int(year), int(month), 1)), zone)
    if granularity == "minute":  # the minutes of an hour share one hash, labelled with the hour
        return window_bucket_span("hour", label)[1] * 60
    if granularity in WINDOW_GRANULARITIES:
        return window_bucket_span(granularity, label)[1] * 60
    raise ValueError(f"no bucket granularity {granularity!r}")


@dataclass(frozen=True)
class RetentionPolicy:
    """How much event time each kind of state is kept behind the watermark."""

    zone: ZoneInfo
    day_days: int
    month_months: int
    utcday_days: int
    hour_days: int
    minute_days: int
    deal_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        history = settings.business.history_retention_days
        kept = settings.retention
        return cls(
            zone=settings.business.zone,
            day_days=history + kept.day_margin_days,
            month_months=kept.month_months,
            utcday_days=kept.utcday_days,
            hour_days=kept.hour_days,
            minute_days=kept.minute_days,
            deal_days=history + kept.deal_margin_days,
        )

    def cutoffs(self, watermark_us: int) -> dict[str, int]:
        """Per bucket granularity, and for deal histories (``deal``): what ends at or before this
        instant (epoch seconds) is expired."""
        watermark_s = watermark_us // 1_000_000
        month = datetime.fromtimestamp(watermark_s, self.zone).date().replace(day=1)
        return {
            "day": watermark_s - self.day_days * SECONDS_PER_DAY,
            "month": local_midnight_s(_add_months(month, 1 - self.month_months), self.zone),
            "utcday": watermark_s - self.utcday_days * SECONDS_PER_DAY,
            "hour": watermark_s - self.hour_days * SECONDS_PER_DAY,
            "minute": watermark_s - self.minute_days * SECONDS_PER_DAY,
            DEAL: watermark_s - self.deal_days * SECONDS_PER_DAY,
        }

    def window_horizon_s(self, watermark_us: int) -> int:
        """The earliest instant (epoch seconds) a rolling window may start at and still be read whole:
        every UTC-day, hour and minute bucket from there on is kept."""
        cutoffs = self.cutoffs(watermark_us)
        return max(cutoffs[granularity] for granularity in WINDOW_GRANULARITIES)

    @property
    def window_days(self) -> int:
        """How far back (in days behind the watermark) rolling windows can be read."""
        return min(self.utcday_days, self.hour_days, self.minute_days)


def deal_end_s(latest_us: int) -> int:
    """The index score of a deal history: the second after its latest event (expired when it is at
    or before the ``deal`` cutoff, i.e. when the latest event is older than the cutoff)."""
    return latest_us // 1_000_000 + 1


__all__ = [
    "DEAL",
    "RetentionPolicy",
    "bucket_end_s",
    "deal_end_s",
    "local_midnight_s",
]
