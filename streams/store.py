"""The worker's state in Redis: reads before a batch, one atomic commit after it."""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from services.kpis.contributions import BUCKET_GRANULARITIES, CURRENT, BucketKey, Contributions, DealEvent, Win
from services.topics import RedisKeys

_COMMIT_SCRIPT = (Path(__file__).parent / "commit.lua").read_text()
_CLAIMED_SCRIPT = """
local found = {}
for index, key in ipairs(cjson.decode(ARGV[1])) do
  if redis.call('EXISTS', key) == 1 then found[#found + 1] = index end
end
return found
"""
"""The 1-based positions of the claim keys (a JSON array) that exist: most do not, so the answer is
short, and one JSON argument costs the client far less to send than a key per argument (MGET)."""
CHANGE_FEED_MAXLEN = 100_000
_KEY_CACHE_LIMIT = 200_000
EXACT_IN_LUA = 2**53
"""Integers below this (in magnitude) survive cjson's decoding into Lua doubles exactly."""
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

    offsets: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    """``topic:partition`` -> (stored offset read before the batch, new next offset); a new offset of None
    only checks that the partition has none yet (a fence, see :class:`SoleWriterStore`)."""
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
    announce: list[BucketKey] = field(default_factory=list)
    """Buckets to put in the change-feed entry whatever the deltas (see :class:`BulkStore`)."""


class StateStore:
    """Reads and writes the worker state of one deployment (one key prefix)."""

    def __init__(self, redis: Redis, keys: RedisKeys, *, claim_ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.claim_ttl_s = claim_ttl_s
        self._script = redis.register_script(_COMMIT_SCRIPT)
        self._key_cache: dict[tuple[str, str, str], str] = {}
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

    async def batch_state(
        self, tps: Iterable[str], event_ids: list[str]
    ) -> tuple[dict[str, int | None], int | None, set[str]]:
        """What a batch reads before its work, in one round trip: the stored offsets of these
        partitions, the watermark, and which of these event ids were accepted before."""
        names = list(tps)
        pipe = self.redis.pipeline(transaction=False)
        self._ask_state(pipe, names, event_ids)
        return self._state_of(names, event_ids, await pipe.execute())

    def _ask_state(self, pipe: Pipeline, names: list[str], event_ids: list[str]) -> None:
        """The reads of :meth:`batch_state`, added to a pipeline (answered by :meth:`_state_of`)."""
        pipe.hmget(self.keys.offsets, names)
        pipe.get(self.keys.watermark)
        if event_ids:
            seen = self.keys.seen_event
            # (EVAL of the text: a registered script would cost the pipeline a SCRIPT EXISTS round trip)
            pipe.eval(_CLAIMED_SCRIPT, 0, orjson.dumps([seen(event_id) for event_id in event_ids]))

    @staticmethod
    def _state_of(
        names: list[str], event_ids: list[str], replies: list[Any]
    ) -> tuple[dict[str, int | None], int | None, set[str]]:
        offsets = {
            name: int(value) if value is not None else None for name, value in zip(names, replies[0], strict=True)
        }
        watermark = int(replies[1]) if replies[1] is not None else None
        claimed = {event_ids[int(index) - 1] for index in replies[2]} if event_ids else set()
        return offsets, watermark, claimed

    prefetches = False
    """Whether the store reads a batch's likely deals and customers with its state (see :meth:`expect`)."""

    def expect(self, deal_ids: list[str], customer_ids: list[str]) -> None:
        """The deals and customers the next batch will likely read (asked only when ``prefetches``)."""

    async def _read(self, keys: list[str]) -> list[bytes | str | None]:
        """The stored values of these keys (None when absent)."""
        return await self.redis.mget(keys)

    async def deals(self, deal_ids: list[str]) -> dict[str, tuple[list[DealEvent], str]]:
        """Each deal's history and the digest of its stored value ('' when absent)."""
        if not deal_ids:
            return {}
        rows = await self._read([self.keys.deal(deal_id) for deal_id in deal_ids])
        return {
            deal_id: self.decode_deal(_bytes(raw) if raw else b"") for deal_id, raw in zip(deal_ids, rows, strict=True)
        }

    async def customers(self, customer_ids: list[str]) -> dict[str, tuple[dict[str, list[Win]], str]]:
        """Each customer's wins by deal id, and the digest of its stored value ('' when absent)."""
        if not customer_ids:
            return {}
        rows = await self._read([self.keys.customer(customer_id) for customer_id in customer_ids])
        return {
            customer_id: self.decode_customer(_bytes(raw) if raw else b"")
            for customer_id, raw in zip(customer_ids, rows, strict=True)
        }

    @staticmethod
    def decode_deal(raw: bytes) -> tuple[list[DealEvent], str]:
        """A stored deal value ('' or b'' for none): its history and digest."""
        return ([DealEvent.from_row(row) for row in orjson.loads(raw)], digest(raw)) if raw else ([], "")

    @staticmethod
    def decode_customer(raw: bytes) -> tuple[dict[str, list[Win]], str]:
        """A stored customer value (b'' for none): its wins by deal id and digest."""
        by_deal = orjson.loads(raw) if raw else {}
        wins = {deal: [Win.from_row(row) for row in rows] for deal, rows in by_deal.items()}
        return wins, digest(raw) if raw else ""

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

    check_claims = True
    """Whether commit.lua checks that no claim exists yet (only a sole writer knows without looking)."""

    text_deltas = False
    """Whether every bucket's deltas go as decimal texts (see :meth:`commit_args`), not only a new key's."""

    def _is_new(self, key: str) -> bool:
        """Whether a bucket key is known to be absent, so its first write may set its fields (only a sole
        writer of a wiped state knows; see :class:`SoleWriterStore`)."""
        return False

    async def commit(self, commit: Commit) -> str:
        """Apply the batch atomically; returns the change-feed id ('' when no KPI changed)."""
        return self.applied(await self._script(args=self.commit_args(commit)))

    @staticmethod
    def applied(result: list[bytes | str | int]) -> str:
        """The change-feed id commit.lua answered, or CommitConflict if it refused the batch."""
        if int(result[0]) != 1:
            reason = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
            detail = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
            raise CommitConflict(f"{reason}: {detail}")
        change_id = result[1]
        return change_id.decode() if isinstance(change_id, bytes) else str(change_id)

    def commit_args(self, commit: Commit) -> list[str | bytes | int]:
        """The ARGV of commit.lua for a batch (see the script for its sections)."""
        args: list[str | bytes | int] = [self.keys.offsets, len(commit.offsets)]
        for tp, (expected, new) in commit.offsets.items():
            args += [tp, "" if expected is None else str(expected), "" if new is None else str(new)]
        args += [str(self.claim_ttl_s), "1" if self.check_claims else "0", orjson.dumps(commit.claims)]
        args.append(len(commit.expected))
        for key, fingerprint in commit.expected.items():
            args += [key, fingerprint]

        # The increments go as one JSON argument (decoded by cjson in the script): packing a few
        # hundred thousand separate arguments costs the client more than the whole script. A bucket's
        # deltas go as an object of JSON numbers; as a list of decimal texts when one of them is
        # too large for a Lua double, and for a key known to be new (a replay's): the script then
        # sets them with one HSET, and texts cost it a third less than numbers (which cjson parses
        # and HSET formats back). The worker's increments stay numbers: text cost it more.
        increments: list[tuple[str, str, str, dict[str, int] | list[str], int]] = []
        touched: list[str] = []
        ends = commit.bucket_ends
        key_of = self._bucket_key
        feed = commit.feed
        is_new = self._is_new
        for (scope, granularity, bucket), deltas in commit.contributions.items():
            values = deltas.values()
            if not any(values):
                continue
            key = key_of(scope, granularity, bucket)
            new = 1 if is_new(key) else 0
            fields: dict[str, int] | list[str] = (
                deltas
                if not new and not self.text_deltas and max(values) < EXACT_IN_LUA and min(values) > -EXACT_IN_LUA
                else [item for measure, delta in deltas.items() if delta for item in (measure, str(delta))]
            )
            if granularity == CURRENT:
                increments.append((key, "", "", fields, new))
            else:
                increments.append((key, self._index_keys[granularity], str(ends[(granularity, bucket)]), fields, new))
            if feed and granularity in CHANGE_FEED_GRANULARITIES:
                touched += (key, scope, granularity, bucket)
        for scope, granularity, bucket in commit.announce:
            touched += (key_of(scope, granularity, bucket), scope, granularity, bucket)
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
        return args


def resp_command(args: list[str | bytes | int]) -> bytes:
    """A command in the Redis protocol (RESP), as one buffer."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if type(arg) is bytes else str(arg).encode()
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


class CommitThread:
    """Sends commits from a thread of its own, over a second (synchronous) connection, each as one
    buffer: Redis applies a commit while the event loop's thread works on the next batch.

    Sent from the event loop, a commit of megabytes goes out only as far as the socket takes it, and
    the rest waits until the loop runs again, at the end of the next batch's work, which never yields.
    The thread's send releases the interpreter lock while it blocks. The buffer is packed on the
    event loop's thread: the client would send its pieces (one per 6 kB) with a call each, and after
    each the commit thread waits for the interpreter lock, which the busy main thread yields only
    every few milliseconds. Sent in pieces, a 20,000-record commit took 0.35-0.5 s to reach Redis
    and apply, with 0.1-0.15 s of it in Redis.
    """

    def __init__(self, writer: SyncRedis) -> None:
        self._writer = writer
        self._sha = hashlib.sha1(_COMMIT_SCRIPT.encode()).hexdigest()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")

    def submit(self, args: list[str | bytes | int]) -> asyncio.Future[str]:
        """Send commit.lua with these arguments; the future answers the change id (commits apply in the
        order submitted; one refused raises CommitConflict)."""
        return self.submit_packed(self.pack(args))

    def pack(self, args: list[str | bytes | int]) -> bytes:
        """The command of a commit with these arguments, as :meth:`submit_packed` sends it."""
        return resp_command(["EVALSHA", self._sha, 0, *args])

    def submit_packed(self, packed: bytes) -> asyncio.Future[str]:
        return asyncio.get_running_loop().run_in_executor(self._thread, self._apply, packed)

    def _apply(self, packed: bytes) -> str:
        pool = self._writer.connection_pool
        connection = pool.get_connection()
        try:
            for attempt in range(2):
                connection.send_packed_command([packed])  # type: ignore[no-untyped-call]
                try:
                    return StateStore.applied(connection.read_response())
                except NoScriptError:  # a Redis started afresh: load the script and send again
                    if attempt:
                        raise
                    self._writer.script_load(_COMMIT_SCRIPT)
            raise AssertionError("unreachable")
        finally:
            pool.release(connection)

    def close(self) -> None:
        """Stop the thread (after its commits) and close its connection."""
        self._thread.shutdown(wait=True)
        self._writer.close()


class FeedAtEnd:
    """The change feed of a bulk run (an import, ``replay --keep``), written once at its end.

    Batch by batch, the change feed would carry every touched day and month hash again and again
    (a month's hash in every batch of that month, with every scope's), hundreds of megabytes for a
    history file, all of it relayed to ``kpi.updates``. So the batches write no feed entry; this
    notes the buckets they touched, and :meth:`announce` writes each one's final values once, at
    the end, in entries of ``ANNOUNCE_CHUNK`` buckets.
    """

    ANNOUNCE_CHUNK = 500

    def __init__(self) -> None:
        self.touched: set[BucketKey] = set()

    def note(self, commit: Commit) -> None:
        self.touched.update(
            bucket
            for bucket, deltas in commit.contributions.items()
            if bucket[1] in CHANGE_FEED_GRANULARITIES and any(deltas.values())
        )

    async def announce(self, store: StateStore, produced_ms: int) -> int:
        """Write the touched buckets' values to the change feed (every commit has applied); returns how many."""
        touched = sorted(self.touched)
        for start in range(0, len(touched), self.ANNOUNCE_CHUNK):
            chunk = touched[start : start + self.ANNOUNCE_CHUNK]
            await StateStore.commit(store, Commit(announce=chunk, produced_ms=produced_ms))
        self.touched.clear()
        return len(touched)


class SoleWriterStore(StateStore):
    """The store of a replay onto wiped state, or of an import onto a state that holds nothing yet: it
    is the only writer, so it reads nothing back.

    Offsets, claims, the watermark and the deal and customer values are answered from what this
    store committed itself (a wiped or empty state holds nothing else). A bucket key it has not
    written yet is absent, so its first write sets the fields, and claims need no check. Every
    commit checks the offsets of all the partitions named by :meth:`fence` (not only those of its
    batch), so any other writer's commit in between (a worker left running) makes it fail rather
    than overwrite what that writer added.

    Commits go through a :class:`CommitThread`: Redis applies one batch while this process works on
    the next, and a commit heavier than the work on the next batch (recent batches write minute and
    hour buckets, older ones do not) holds nothing up until ``IN_FLIGHT`` wait. Commits still go in
    order, one at a time, and each is still fenced: if another writer touched the state, the commit
    fails, every later one with it, and the replay stops with that error (:meth:`flush` or a later
    :meth:`commit` raises it).
    """

    check_claims = False
    IN_FLIGHT = 2
    """Commits queued at most: the next batch is worked on while Redis catches up with a heavy one."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, *, claim_ttl_s: int, writer: SyncRedis, feed_at_end: bool = False
    ) -> None:
        super().__init__(redis, keys, claim_ttl_s=claim_ttl_s)
        self.feed_at_end = FeedAtEnd() if feed_at_end else None
        """With a change feed written once at the end (an import's; a replay's wipe writes none)."""
        self._fenced: list[str] = []
        self._offsets: dict[str, int] = {}
        self._claims: set[str] = set()
        self._values: dict[str, bytes] = {}
        self._watermark_us: int | None = None
        self._written: set[str] = set()
        self._sender = CommitThread(writer)
        self._pending: deque[asyncio.Future[str]] = deque()

    @property
    def watermark_us(self) -> int | None:
        """The watermark of the commits sent so far."""
        return self._watermark_us

    def fence(self, partitions: Iterable[str]) -> None:
        """Check these partitions' offsets (``topic:partition``) in every commit, whether or not its batch
        has records of them."""
        self._fenced = list(partitions)

    def _is_new(self, key: str) -> bool:
        """Absent unless written by an earlier commit of this store (and now counted as written)."""
        if key in self._written:
            return False
        self._written.add(key)
        return True

    async def offsets(self, fields: Iterable[str]) -> dict[str, int | None]:
        return {name: self._offsets.get(name) for name in fields}

    async def batch_state(
        self, tps: Iterable[str], event_ids: list[str]
    ) -> tuple[dict[str, int | None], int | None, set[str]]:
        seen = self.keys.seen_event
        claimed = {event_id for event_id in event_ids if seen(event_id) in self._claims}
        return await self.offsets(tps), self._watermark_us, claimed

    async def all_offsets(self) -> dict[str, int]:
        return dict(self._offsets)

    async def deals(self, deal_ids: list[str]) -> dict[str, tuple[list[DealEvent], str]]:
        return {deal_id: self.decode_deal(self._values.get(self.keys.deal(deal_id), b"")) for deal_id in deal_ids}

    async def customers(self, customer_ids: list[str]) -> dict[str, tuple[dict[str, list[Win]], str]]:
        customer = self.keys.customer
        return {
            customer_id: self.decode_customer(self._values.get(customer(customer_id), b""))
            for customer_id in customer_ids
        }

    async def commit(self, commit: Commit) -> str:
        """Queue the commit (waiting while ``IN_FLIGHT`` are queued); returns '' (replay writes no change
        feed). Commits apply in order, one at a time; each is fenced by the offsets before it, so none
        applies after one that failed."""
        commit.feed = False
        if self.feed_at_end is not None:
            self.feed_at_end.note(commit)
        while len(self._pending) >= self.IN_FLIGHT:
            await self._applied(self._pending.popleft())
        for tp in self._fenced:
            if tp not in commit.offsets:
                commit.offsets[tp] = (self._offsets.get(tp), self._offsets.get(tp))
        for tp, (_, new) in commit.offsets.items():
            if new is not None:
                self._offsets[tp] = new
        self._claims.update(commit.claims)
        self._values.update(commit.values)
        if commit.watermark_us is not None and (self._watermark_us is None or commit.watermark_us > self._watermark_us):
            self._watermark_us = commit.watermark_us
        self._pending.append(self._sender.submit(self.commit_args(commit)))
        return ""

    async def flush(self) -> None:
        """Wait for every commit queued (and raise the first error, if one failed)."""
        pending, self._pending = list(self._pending), deque()
        if pending:
            await asyncio.wait(pending)
        for future in pending:
            await self._applied(future)

    @staticmethod
    async def _applied(future: asyncio.Future[str]) -> None:
        """Wait for a commit; one refused (another writer moved the state) raises PreviousCommitFailed:
        it and every commit after it did not apply, and the caller stops (Redis errors pass as they are)."""
        try:
            await future
        except CommitConflict as conflict:
            raise PreviousCommitFailed(f"CommitConflict: {conflict}") from conflict

    async def announce(self, produced_ms: int) -> int:
        """Wait for every commit queued, then write the change feed of the touched buckets (see
        :class:`FeedAtEnd`); returns how many buckets."""
        await self.flush()
        return await self.feed_at_end.announce(self, produced_ms) if self.feed_at_end is not None else 0

    def close(self) -> None:
        """Stop the commit thread and close its connection (after :meth:`flush`)."""
        self._sender.close()


class PreviousCommitFailed(Exception):
    """The commit sent before did not apply (a conflict or an outage): the batches from that one
    on must be applied again, from fresh reads."""


class OverlappedStore(StateStore):
    """The batch process's store: each commit is sent while the caller works on the next batch.

    Redis runs one batch's script while Python validates and reduces the next. Reads answer as if
    the commit in flight had applied (its offsets, claims, deal and customer values and watermark
    lie over what Redis returns). If it did not apply, the next :meth:`commit` (or :meth:`settle`)
    raises :class:`PreviousCommitFailed`; the caller applies that batch and the following ones
    again. Every commit is still fenced by the offsets, claims and value digests it read, so one
    computed over a commit that failed can never apply: nothing is lost or counted twice.
    """

    def __init__(self, redis: Redis, keys: RedisKeys, *, claim_ttl_s: int) -> None:
        super().__init__(redis, keys, claim_ttl_s=claim_ttl_s)
        self._inflight: asyncio.Future[str] | None = None
        self._overlay: Commit | None = None
        self.sent = 0
        """Commits sent so far (the generation of the latest)."""
        self.settled = 0
        """The latest generation known to be applied (every one before it is, too)."""

    async def settle(self) -> None:
        """Wait for the commit in flight; raises PreviousCommitFailed if it did not apply."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        try:
            await inflight
        except Exception as exc:
            self._overlay = None
            raise PreviousCommitFailed(f"{type(exc).__name__}: {exc}") from exc
        self._overlay = None
        self.settled = self.sent

    async def commit(self, commit: Commit) -> str:
        """Send the commit once the one before it applied; returns '' (the change id is not waited for)."""
        await self.settle()
        self.sent += 1
        self._inflight = self._send(commit)
        self._overlay = commit
        # Let the task send the script now: the next batch's work never yields to the event loop, and
        # when that batch is already waiting in the pipe, reading it does not either.
        await asyncio.sleep(0)
        return ""

    def _send(self, commit: Commit) -> asyncio.Future[str]:
        """Start applying a commit (in the background)."""
        return asyncio.ensure_future(StateStore.commit(self, commit))

    async def batch_state(
        self, tps: Iterable[str], event_ids: list[str]
    ) -> tuple[dict[str, int | None], int | None, set[str]]:
        offsets, watermark, claimed = await super().batch_state(tps, event_ids)
        return self._overlaid(offsets, watermark, claimed, event_ids)

    def _overlaid(
        self, offsets: dict[str, int | None], watermark: int | None, claimed: set[str], event_ids: list[str]
    ) -> tuple[dict[str, int | None], int | None, set[str]]:
        """The state read, as if the commit in flight (or held) had applied."""
        overlay = self._overlay
        if overlay is None:
            return offsets, watermark, claimed
        for tp, (_, new) in overlay.offsets.items():
            if tp in offsets:
                offsets[tp] = new
        if overlay.watermark_us is not None:
            watermark = overlay.watermark_us if watermark is None else max(watermark, overlay.watermark_us)
        if overlay.claims:
            claims = set(overlay.claims)
            seen = self.keys.seen_event
            claimed.update(event_id for event_id in event_ids if seen(event_id) in claims)
        return offsets, watermark, claimed

    async def deals(self, deal_ids: list[str]) -> dict[str, tuple[list[DealEvent], str]]:
        values = self._overlay.values if self._overlay is not None else {}
        key = self.keys.deal
        found = {deal_id: self.decode_deal(values[key(deal_id)]) for deal_id in deal_ids if key(deal_id) in values}
        found.update(await super().deals([deal_id for deal_id in deal_ids if deal_id not in found]))
        return found

    async def customers(self, customer_ids: list[str]) -> dict[str, tuple[dict[str, list[Win]], str]]:
        values = self._overlay.values if self._overlay is not None else {}
        key = self.keys.customer
        found = {c: self.decode_customer(values[key(c)]) for c in customer_ids if key(c) in values}
        found.update(await super().customers([c for c in customer_ids if c not in found]))
        return found


class BulkStore(OverlappedStore):
    """The store of a replay that continues from the state (``--keep``, a history import onto a state
    that holds events already): like the worker's batch process (each commit overlaps the next
    batch), except for the change feed, written once at the end (:class:`FeedAtEnd`).

    A commit is held until the next batch has read what it needs (answered as if the commit held
    had applied, like the one in flight): Redis runs one script at a time, so reads sent after a
    commit wait until it applied (0.2-0.5 s for a batch of 20,000 records). The batch's state
    (offsets, watermark, claims) comes in one round trip with the deals and customers it will
    likely read (:meth:`expect`: those its records name, and the customers of the deals cached),
    and the commit held goes right after it, so that it applies while the whole batch is
    computed. A deal or customer not foreseen is read after it (and waits for it).
    """

    text_deltas = True
    prefetches = True

    def __init__(self, redis: Redis, keys: RedisKeys, *, claim_ttl_s: int, writer: SyncRedis | None = None) -> None:
        super().__init__(redis, keys, claim_ttl_s=claim_ttl_s)
        self.feed_at_end = FeedAtEnd()
        self._sender = CommitThread(writer) if writer is not None else None
        """With a writer, commits go through a CommitThread (else from the event loop)."""
        self._held: Commit | None = None
        self._expected: tuple[list[str], list[str]] = ([], [])
        self._prefetched: dict[str, bytes | str | None] = {}
        self._packed: tuple[Commit, bytes] | None = None
        """The commit held, packed while a batch's reads were answered."""

    def expect(self, deal_ids: list[str], customer_ids: list[str]) -> None:
        self._expected = (deal_ids, customer_ids)

    async def batch_state(
        self, tps: Iterable[str], event_ids: list[str]
    ) -> tuple[dict[str, int | None], int | None, set[str]]:
        """The batch's state and its likely deals and customers in one round trip; then the commit held goes."""
        deal_ids, customer_ids = self._expected
        self._expected = ([], [])
        names = list(tps)
        # (the commit held holds the values it writes: no need to read those)
        written = self._overlay.values if self._overlay is not None else {}
        likely = [key for key in map(self.keys.deal, deal_ids) if key not in written]
        likely += [key for key in map(self.keys.customer, customer_ids) if key not in written]
        pipe = self.redis.pipeline(transaction=False)
        self._ask_state(pipe, names, event_ids)
        if likely:
            pipe.mget(likely)
        reading = asyncio.ensure_future(pipe.execute())
        # The commit held is packed while Redis answers (the request goes out first: packing never yields).
        await asyncio.sleep(0)
        if self._held is not None and self._sender is not None:
            self._packed = (self._held, self._sender.pack(self.commit_args(self._held)))
        replies = await reading
        self._prefetched = dict(zip(likely, replies[-1], strict=True)) if likely else {}
        state = self._overlaid(*self._state_of(names, event_ids, replies), event_ids)
        await self._send_held()
        return state

    def _send(self, commit: Commit) -> asyncio.Future[str]:
        if self._sender is None:
            return super()._send(commit)
        packed, self._packed = self._packed, None
        if packed is not None and packed[0] is commit:
            return self._sender.submit_packed(packed[1])
        return self._sender.submit(self.commit_args(commit))

    def close(self) -> None:
        """Stop the commit thread, if any (after :meth:`settle`)."""
        if self._sender is not None:
            self._sender.close()

    async def _read(self, keys: list[str]) -> list[bytes | str | None]:
        prefetched = self._prefetched
        missing = [key for key in keys if key not in prefetched]
        if missing:
            prefetched.update(zip(missing, await super()._read(missing), strict=True))
        return [prefetched[key] for key in keys]

    async def commit(self, commit: Commit) -> str:
        await self.settle()  # (the commit held went after the batch's reads)
        self._prefetched = {}
        commit.feed = False
        self._held = self._overlay = commit
        self.feed_at_end.note(commit)
        return ""

    async def _send_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await OverlappedStore.commit(self, held)

    async def settle(self) -> None:
        await self._send_held()
        await super().settle()

    async def announce(self, produced_ms: int) -> int:
        """Once every commit applied, write the touched buckets' values to the change feed; returns how
        many buckets."""
        await self.settle()
        return await self.feed_at_end.announce(self, produced_ms)
