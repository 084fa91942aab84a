"""services/token_store.py against an in-memory stand-in for Redis: why tokens are refused, and the
one-round-trip check of many tokens used to re-check open WebSocket connections."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis

from services.auth import Role, hash_token
from services.token_store import UNKNOWN_TOKEN, TokenStore
from services.topics import AuthKeys

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class FakeRedis:
    """The hash commands the token store uses; counts HMGETs."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.hmgets = 0

    async def hset(self, key: str, field: str, value: str) -> int:
        self.hashes.setdefault(key, {})[field] = value
        return 1

    async def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.hashes.get(key, {}))

    async def hmget(self, key: str, fields: Sequence[str]) -> list[str | None]:
        self.hmgets += 1
        stored = self.hashes.get(key, {})
        return [stored.get(field) for field in fields]


async def test_refused_names_the_revoked_and_unknown_tokens_in_one_lookup() -> None:
    redis = FakeRedis()
    store = TokenStore(cast(Redis, redis), AuthKeys(prefix="t.auth"))
    kept, _ = await store.create(name="floor 2", role=Role.DISPLAY, now=NOW)
    revoked, record = await store.create(name="lobby wall", role=Role.DISPLAY, now=NOW)
    await store.revoke(record.id, NOW)
    digests = [hash_token(kept), hash_token(revoked), hash_token("crmp_never_issued")]

    refused = await store.refused(digests)

    assert redis.hmgets == 1
    assert refused == {
        hash_token(revoked): f"the API token {record.id} ('lobby wall') was revoked at {NOW.isoformat()}",
        hash_token("crmp_never_issued"): UNKNOWN_TOKEN,
    }
    assert await store.refused([]) == {}
    assert redis.hmgets == 1  # no round trip for nothing
