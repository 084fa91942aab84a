"""The worker's state in Redis: reads before a batch, one atomic commit after it."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from redis.asyncio import Redis

from services.kpis.contributions import BUCKET_GRANULARITIES, CURRENT, Contributions, DealEvent, Win
from services.topics import RedisKeys

_COMMIT_SCRIPT = (Path(__file__).parent / "commit.lua").read_text()
CHANGE_FEED_MAXLEN = 100_000
_KEY_CACHE_LIMIT = 200_000
CHANGE_FEED_GRANULARITIES: frozenset[str] = frozenset(("day", "month", CURRENT))
"""What the change feed (and so the WebSocket push) carries: local day and month buckets and current
state; the UTC day, hour and minute buckets of rolling windows would multiply its traffic."""


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def digest(value: bytes) -> str:
    """The fingerprint commit.lua compares to see that a value did not change since it was read."""
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()


class CommitConflict(Exception):
    """The state moved under the batch (another worker, or a second copy of the batch): redo it."""


@dataclass
class Commit:
    """Everything one batch changes, applied atomically by commit.lua."""

    offsets: dict[str, tuple[int | None, int]] = field(default_factory=dict)
    """``topic:partition`` -> (stored offset read before the batch, new next offset)."""
    claims: list[str] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)
    """Value key -> digest of the value read before the batch ('' = absent); the commit fails if it moved."""
    contributions: Contributions = field(default_factory=dict)
    values: dict[str, bytes] = field(default_factory=dict)
    members: set[tuple[str, str]] = field(default_factory=set)
    hash_fields: list[tuple[str, str, str]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    watermark_us: int | None = None
    produced_ms: int = 0
    bucket_ends: dict[tuple[str, str], int] = field(default_factory=dict)
    """(granularity, bucket) -> end of the bucket (epoch seconds), the score of its keys in the time index."""
    deal_expiry: dict[str, int | None] = field(default_factory=dict)
    """Deal key -> score in the deal index (second after its latest event), None for an open deal (never expires)."""
    open_deals: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    """Deal id -> (stage entry, latest event) scores of an open deal, None for one not open (deal alert rules)."""
    deal_activity: dict[str, str] = field(default_factory=dict)
    """Deal id -> score of its latest call, meeting or proposal in the batch."""
    feed: bool = True
    """Write a change-feed entry of the touched day, month and current hashes (replay does not)."""


class StateStore:
    """Reads and writes the worker state of one deployment (one key prefix)."""

    def __init__(self, redis: Redis, keys: RedisKeys, *, claim_ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.claim_ttl_s = claim_ttl_s
        self._script = redis.register_script(_COMMIT_SCRIPT)
        self._key_cache: dict[tuple[str, str, str], str] = {}
        self._written: set[str] | None = None
        """The bucket keys this store has written, when it is the only writer of a wiped state (then
        a key not in it is absent: its first write sets the fields, and claims are not checked)."""
        self._index_keys = {granularity: keys.bucket_index(granularity) for granularity in BUCKET_GRANULARITIES}  # type: ignore[arg-type]

    async def offsets(self, fields: Iterable[str]) -> dict[str, int | None]:
        names = list(fields)
        if not names:
            return {}
        values = await self.redis.hmget(self.keys.offsets, names)
        return {name: int(value) if value is not None else None for name, value in zip(names, values, strict=True)}

    async def all_offsets(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.offsets)
        return {_text(k): int(v) for k, v in raw.items()}

    async def watermark_us(self) -> int | None:
        value = await self.redis.get(self.keys.watermark)
        return int(value) if value is not None else None

    async def claimed(self, event_ids: list[str]) -> set[str]:
        """Which of these event ids were accepted before (one MGET)."""
        if not event_ids:
            return set()
        found = await self.redis.mget([self.keys.seen_event(event_id) for event_id in event_ids])
        return {event_id for event_id, hit in zip(event_ids, found, strict=True) if hit is not None}

    async def deals(self, deal_ids: list[str]) -> dict[str, tuple[list[DealEvent], str]]:
        """Each deal's history and the digest of its stored value ('' when absent)."""
        if not deal_ids:
            return {}
        rows = await self.redis.mget([self.keys.deal(deal_id) for deal_id in deal_ids])
        return {
            deal_id: ([DealEvent.from_row(row) for row in orjson.loads(raw)], digest(_bytes(raw))) if raw else ([], "")
            for deal_id, raw in zip(deal_ids, rows, strict=True)
        }

    async def customers(self, customer_ids: list[str]) -> dict[str, tuple[dict[str, list[Win]], str]]:
        """Each customer's wins by deal id, and the digest of its stored value ('' when absent)."""
        if not customer_ids:
            return {}
        rows = await self.redis.mget([self.keys.customer(customer_id) for customer_id in customer_ids])
        result: dict[str, tuple[dict[str, list[Win]], str]] = {}
        for customer_id, raw in zip(customer_ids, rows, strict=True):
            by_deal = orjson.loads(raw) if raw else {}
            wins = {deal: [Win.from_row(row) for row in rows_] for deal, rows_ in by_deal.items()}
            result[customer_id] = (wins, digest(_bytes(raw)) if raw else "")
        return result

    @staticmethod
    def encode_deal(history: Iterable[DealEvent]) -> bytes:
        return orjson.dumps([event.to_row() for event in history])

    @staticmethod
    def encode_customer(wins_by_deal: Mapping[str, list[Win]]) -> bytes:
        return orjson.dumps({deal: [win.to_row() for win in wins] for deal, wins in wins_by_deal.items() if wins})

    def _bucket_key(self, scope: str, granularity: str, bucket: str) -> str:
        triple = (scope, granularity, bucket)
        found = self._key_cache.get(triple)
        if found is None:
            if granularity == CURRENT:
                found = self.keys.current(scope)
            else:
                found = self.keys.bucket(scope, granularity, bucket)  # type: ignore[arg-type]
            if len(self._key_cache) >= _KEY_CACHE_LIMIT:
                self._key_cache.clear()
            self._key_cache[triple] = found
        return found

    async def commit(self, commit: Commit) -> str:
        """Apply the batch atomically; returns the change-feed id ('' when no KPI changed)."""
        args: list[str | bytes | int] = [self.keys.offsets, len(commit.offsets)]
        for tp, (expected, new) in commit.offsets.items():
            args += [tp, "" if expected is None else str(expected), str(new)]
        args += [str(self.claim_ttl_s), "0" if self._written is not None else "1", orjson.dumps(commit.claims)]
        args.append(len(commit.expected))
        for key, fingerprint in commit.expected.items():
            args += [key, fingerprint]

        # The increments go as one JSON argument (decoded by cjson in the script): packing a few
        # hundred thousand separate arguments costs the client more than the whole script.
        # Deltas go as text: JSON numbers would lose digits in Lua doubles.
        increments: list[tuple[str, str, str, list[str], int]] = []
        touched: list[str] = []
        ends = commit.bucket_ends
        key_of = self._bucket_key
        feed = commit.feed
        written = self._written
        for (scope, granularity, bucket), deltas in commit.contributions.items():
            fields = [item for measure, delta in deltas.items() if delta for item in (measure, str(delta))]
            if not fields:
                continue
            key = key_of(scope, granularity, bucket)
            new = 0
            if written is not None and key not in written:
                written.add(key)
                new = 1
            if granularity == CURRENT:
                increments.append((key, "", "", fields, new))
            else:
                increments.append((key, self._index_keys[granularity], str(ends[(granularity, bucket)]), fields, new))
            if feed and granularity in CHANGE_FEED_GRANULARITIES:
                touched += (key, scope, granularity, bucket)
        counters = [item for name, value in commit.stats.items() if value for item in (name, str(value))]
        if counters:
            increments.append((self.keys.worker_stats, "", "", counters, 0))
        args.append(orjson.dumps(increments))

        args.append(len(commit.values))
        for key, stored in commit.values.items():
            args += [key, stored]
        args += [self.keys.deal_index, len(commit.deal_expiry)]
        for key, deal_score in commit.deal_expiry.items():
            args += [key, "" if deal_score is None else str(deal_score)]
        args += [self.keys.open_deals_by_stage_entry, self.keys.open_deals_by_activity, len(commit.open_deals)]
        for deal_id, times in commit.open_deals.items():
            args += [deal_id, *(times or ("", ""))]
        args.append(len(commit.deal_activity))
        for deal_id, activity_score in commit.deal_activity.items():
            args += [deal_id, activity_score]
        args.append(len(commit.members))
        for key, member in sorted(commit.members):
            args += [key, member]
        args.append(len(commit.hash_fields))
        for key, hash_field, value in commit.hash_fields:
            args += [key, hash_field, value]
        args += [self.keys.watermark, "" if commit.watermark_us is None else str(commit.watermark_us)]
        args += [self.keys.changes, str(CHANGE_FEED_MAXLEN), str(commit.produced_ms), len(touched) // 4, *touched]
        result = await self._script(args=args)
        if int(result[0]) != 1:
            reason = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
            detail = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
            raise CommitConflict(f"{reason}: {detail}")
        change_id = result[1]
        return change_id.decode() if isinstance(change_id, bytes) else str(change_id)


class SoleWriterStore(StateStore):
    """The store of a replay onto wiped state: it is the only writer, so it reads nothing back.

    Offsets, claims, the watermark and the deal and customer values are answered from what this
    store committed itself (a wiped state holds nothing else), and each commit is sent while the
    caller prepares the next batch: Redis runs one script while Python works on the next batch.
    Commits still go in order over one chain, and each is still fenced: if another writer touched
    the state, the commit fails and the replay stops with that error (:meth:`flush` or the next
    :meth:`commit` raises it).
    """

    def __init__(self, redis: Redis, keys: RedisKeys, *, claim_ttl_s: int) -> None:
        super().__init__(redis, keys, claim_ttl_s=claim_ttl_s)
        self._offsets: dict[str, int] = {}
        self._claims: set[str] = set()
        self._values: dict[str, bytes] = {}
        self._watermark_us: int | None = None
        self._pending: asyncio.Task[str] | None = None
        self._written = set()

    async def offsets(self, fields: Iterable[str]) -> dict[str, int | None]:
        return {name: self._offsets.get(name) for name in fields}

    async def all_offsets(self) -> dict[str, int]:
        return dict(self._offsets)

    async def watermark_us(self) -> int | None:
        return self._watermark_us

    async def claimed(self, event_ids: list[str]) -> set[str]:
        seen = self.keys.seen_event
        return {event_id for event_id in event_ids if seen(event_id) in self._claims}

    async def deals(self, deal_ids: list[str]) -> dict[str, tuple[list[DealEvent], str]]:
        found: dict[str, tuple[list[DealEvent], str]] = {}
        for deal_id in deal_ids:
            raw = self._values.get(self.keys.deal(deal_id))
            found[deal_id] = ([DealEvent.from_row(row) for row in orjson.loads(raw)], digest(raw)) if raw else ([], "")
        return found

    async def customers(self, customer_ids: list[str]) -> dict[str, tuple[dict[str, list[Win]], str]]:
        found: dict[str, tuple[dict[str, list[Win]], str]] = {}
        for customer_id in customer_ids:
            raw = self._values.get(self.keys.customer(customer_id))
            by_deal = orjson.loads(raw) if raw else {}
            wins = {deal: [Win.from_row(row) for row in rows] for deal, rows in by_deal.items()}
            found[customer_id] = (wins, digest(raw) if raw else "")
        return found

    async def commit(self, commit: Commit) -> str:
        """Queue the commit behind the previous one; returns '' (replay writes no change feed)."""
        commit.feed = False
        previous, self._pending = self._pending, None
        if previous is not None:
            await previous
        for tp, (_, new) in commit.offsets.items():
            self._offsets[tp] = new
        self._claims.update(commit.claims)
        self._values.update(commit.values)
        if commit.watermark_us is not None and (self._watermark_us is None or commit.watermark_us > self._watermark_us):
            self._watermark_us = commit.watermark_us
        self._pending = asyncio.ensure_future(super().commit(commit))
        return ""

    async def flush(self) -> None:
        """Wait for the last commit (and raise its error, if it failed)."""
        previous, self._pending = self._pending, None
        if previous is not None:
            await previous
