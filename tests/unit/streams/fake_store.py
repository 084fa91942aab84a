"""An in-memory stand-in for streams.store.StateStore, for unit tests of the batch logic."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from services.kpis.contributions import CURRENT, DealEvent, Win
from services.topics import RedisKeys
from streams.store import Commit, CommitConflict, StateStore, digest


class FakeStore:
    def __init__(self, keys: RedisKeys | None = None) -> None:
        self.keys = keys or RedisKeys("test")
        self.offsets_by_tp: dict[str, int] = {}
        self.claims: set[str] = set()
        self.values: dict[str, bytes] = {}
        self.buckets: dict[tuple[str, str, str], dict[str, int]] = {}
        self.members: set[tuple[str, str]] = set()
        self.stats: dict[str, int] = {}
        self.watermark: int | None = None
        self.bucket_index: dict[tuple[str, str], int] = {}
        """(granularity, bucket) -> end (epoch s), as the time indexes of commit.lua hold them (per bucket)."""
        self.deal_index: dict[str, int] = {}
        self.commits = 0
        self.fail_next_commit_after_apply = False

    encode_deal = staticmethod(StateStore.encode_deal)
    encode_customer = staticmethod(StateStore.encode_customer)

    prefetches = True
    """(So that the batch logic's guess of its reads runs too; the guess changes nothing here.)"""
    expected: tuple[list[str], list[str]] = ([], [])

    def expect(self, deal_ids: list[str], customer_ids: list[str]) -> None:
        self.expected = (deal_ids, customer_ids)

    async def batch_state(
        self, tps: Iterable[str], event_ids: list[str]
    ) -> tuple[dict[str, int | None], int | None, set[str]]:
        return await self.offsets(tps), await self.watermark_us(), await self.claimed(event_ids)

    async def offsets(self, fields: Iterable[str]) -> dict[str, int | None]:
        return {name: self.offsets_by_tp.get(name) for name in fields}

    async def watermark_us(self) -> int | None:
        return self.watermark

    async def claimed(self, event_ids: list[str]) -> set[str]:
        return {event_id for event_id in event_ids if self.keys.seen_event(event_id) in self.claims}

    async def deals(self, deal_ids: list[str]) -> dict[str, tuple[list[DealEvent], str]]:
        out: dict[str, tuple[list[DealEvent], str]] = {}
        for deal_id in deal_ids:
            raw = self.values.get(self.keys.deal(deal_id))
            out[deal_id] = ([DealEvent.from_row(row) for row in orjson.loads(raw)], digest(raw)) if raw else ([], "")
        return out

    async def customers(self, customer_ids: list[str]) -> dict[str, tuple[dict[str, list[Win]], str]]:
        out: dict[str, tuple[dict[str, list[Win]], str]] = {}
        for customer_id in customer_ids:
            raw = self.values.get(self.keys.customer(customer_id))
            by_deal = orjson.loads(raw) if raw else {}
            wins = {deal: [Win.from_row(row) for row in rows] for deal, rows in by_deal.items()}
            out[customer_id] = (wins, digest(raw) if raw else "")
        return out

    async def commit(self, commit: Commit) -> str:
        for tp, (expected, _) in commit.offsets.items():
            if self.offsets_by_tp.get(tp) != expected:
                raise CommitConflict(f"offset {tp}")
        if any(claim in self.claims for claim in commit.claims):
            raise CommitConflict("claim")
        for key, expected in commit.expected.items():
            raw = self.values.get(key)
            if (digest(raw) if raw else "") != expected:
                raise CommitConflict(f"value {key}")
        for tp, (_, new) in commit.offsets.items():
            self.offsets_by_tp[tp] = new
        self.claims.update(commit.claims)
        for (scope, granularity, bucket), deltas in commit.contributions.items():
            values = self.buckets.setdefault((scope, granularity, bucket if granularity != CURRENT else ""), {})
            for measure, delta in deltas.items():
                values[measure] = values.get(measure, 0) + delta
                if values[measure] == 0:
                    del values[measure]
        for key, value in commit.values.items():
            if value:
                self.values[key] = value
            else:
                self.values.pop(key, None)
        self.bucket_index.update(commit.bucket_ends)
        for key, score in commit.deal_expiry.items():
            if score is None:
                self.deal_index.pop(key, None)
            else:
                self.deal_index[key] = score
        self.members.update(commit.members)
        for name, value in commit.stats.items():
            self.stats[name] = self.stats.get(name, 0) + value
        if commit.watermark_us is not None:
            self.watermark = max(self.watermark or commit.watermark_us, commit.watermark_us)
        self.commits += 1
        return f"{self.commits}-0"
