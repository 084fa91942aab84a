"""Retention sweeper: deletes the buckets and deal histories that aged out, one worker at a time.

What is kept, and why, is ``services.kpis.retention``. Every bucket key and every deal history
outside the open pipeline is entered, in the same atomic commit that writes it, in a sorted set
per kind (``RedisKeys.bucket_index``, ``RedisKeys.deal_index``) scored by its end in event time.
A sweep reads the watermark, and for each index deletes the keys scored at or before the cutoff
in steps of ``sweep_batch`` keys (``sweep.lua``: ZRANGEBYSCORE, UNLINK, ZREM, atomically). It
never scans the keyspace. The event-id claims expire by themselves (a TTL set by the commit).

Why a deletion never races a commit into losing data:

* Each sweep step and each commit is one Lua script, and Redis runs one script at a time, so a
  commit lands wholly before or wholly after a step.
* Local-day buckets expire when they end ``history retention + 7 days`` before the watermark,
  local months 26 months back (at least 25 days more than the retention): every event they can
  hold is ``too_old`` for the watermark of the sweep, and the watermark only grows. A batch
  validates against the watermark it read when it started; to land an event in a bucket swept
  meanwhile, the watermark would have to move by more than the 7-day margin during one batch.
* Minute, hour and UTC-day buckets expire after 62 days, well inside the history retention, so a
  late event can still belong to one. The batch drops such deltas (``expand_cells``, given the cutoffs);
  if a sweep removes the bucket between the batch's read of the watermark and its commit, the
  commit recreates it with just its delta and indexes it again: it is outside every readable
  window (the API refuses windows starting before ``watermark - 62 days``, and the sweep's
  watermark is never newer than the API's), and the next sweep deletes it again.
* Deal histories expire only when the deal is not in the open pipeline (closed, or its
  deal_created unknown) and its latest event is older than ``history retention + 7 days``. A
  batch that read the history before the sweep deleted it fails its digest check at commit and
  is redone from the state without it; a later event of that deal starts a new history (as for
  a deal whose earlier events were never received).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from services.kpis.retention import DEAL, RetentionPolicy
from services.settings import Settings
from services.topics import BucketGranularity, RedisKeys

log = logging.getLogger(__name__)

_SWEEP_SCRIPT = (Path(__file__).parent / "sweep.lua").read_text()
_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
INDEXED: tuple[BucketGranularity, ...] = ("day", "month", "utcday", "hour", "minute")


@dataclass
class SweepReport:
    """What one sweep did."""

    watermark_us: int | None
    cutoffs: dict[str, int] = field(default_factory=dict)
    """Per index (granularity or ``deal``): what ended at or before this epoch second was deleted."""
    deleted: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    complete: bool = True
    """False when the lock was lost midway (another sweeper carries on)."""

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


class RetentionSweeper:
    """Deletes expired state of one deployment (one key prefix), holding the sweeper lock."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, policy: RetentionPolicy, *, batch: int = 1000, lock_s: float = 120.0
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.policy = policy
        self.batch = batch
        self.lock_ms = int(lock_s * 1000)
        self._sweep = redis.register_script(_SWEEP_SCRIPT)
        self._renew = redis.register_script(_RENEW_SCRIPT)
        self._release = redis.register_script(_RELEASE_SCRIPT)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> RetentionSweeper:
        return cls(
            redis,
            RedisKeys.from_settings(settings),
            RetentionPolicy.from_settings(settings),
            batch=settings.retention.sweep_batch,
            lock_s=settings.retention.sweep_lock_s,
        )

    async def sweep(self) -> SweepReport | None:
        """Delete what expired; None when another sweeper holds the lock."""
        token = uuid.uuid4().hex
        if not await self.redis.set(self.keys.sweeper_lock, token, nx=True, px=self.lock_ms):
            return None
        try:
            return await self._sweep_holding(token)
        finally:
            await self._release(keys=[self.keys.sweeper_lock], args=[token])

    async def _sweep_holding(self, token: str) -> SweepReport:
        started = time.monotonic()
        raw = await self.redis.get(self.keys.watermark)
        report = SweepReport(watermark_us=int(raw) if raw is not None else None)
        if report.watermark_us is None:
            return report  # nothing accepted yet, nothing to age
        report.cutoffs = self.policy.cutoffs(report.watermark_us)
        indexes: list[tuple[str, str]] = [(name, self.keys.bucket_index(name)) for name in INDEXED]
        indexes.append((DEAL, self.keys.deal_index))
        for name, index_key in indexes:
            deleted = 0
            while True:
                count = int(await self._sweep(args=[index_key, report.cutoffs[name], self.batch]))
                deleted += count
                if count < self.batch:
                    break
                if not await self._renew(keys=[self.keys.sweeper_lock], args=[token, self.lock_ms]):
                    report.complete = False
                    break
            report.deleted[name] = deleted
            if not report.complete:
                break
        report.seconds = time.monotonic() - started
        await self._record(report)
        if report.total:
            log.info(
                "retention sweep deleted %d keys in %.2f s (%s)",
                report.total,
                report.seconds,
                ", ".join(f"{name} {count}" for name, count in report.deleted.items() if count),
            )
        return report

    async def _record(self, report: SweepReport) -> None:
        status: dict[Any, str] = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "watermark_us": str(report.watermark_us),
            "seconds": f"{report.seconds:.3f}",
            "complete": "1" if report.complete else "0",
        }
        status.update({f"deleted:{name}": str(count) for name, count in report.deleted.items()})
        status.update({f"cutoff:{name}": str(cutoff) for name, cutoff in report.cutoffs.items()})
        await self.redis.hset(self.keys.sweeper_status, mapping=status)
