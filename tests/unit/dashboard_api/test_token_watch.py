"""Re-checking the tokens of open WebSocket connections, without a server: one lookup of the distinct
tokens per check, only refused tokens' connections marked, nothing marked while Redis does not answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from redis.exceptions import ConnectionError as RedisConnectionError

from dashboard_api.token_watch import TokenWatch
from services.auth import hash_token

WALL, OTHER_WALL, LEAD = "crmp_wall", "crmp_other_wall", "crmp_lead"


class FakeTokens:
    """Answers lookups as ``TokenStore.refused`` would, from a set of refused tokens; records each lookup."""

    def __init__(self, *refused: str, failures: int = 0) -> None:
        self.refused = {hash_token(token): f"{token} was revoked" for token in refused}
        self.failures = failures
        self.lookups: list[list[str]] = []

    async def __call__(self, digests: Sequence[str]) -> Mapping[str, str]:
        self.lookups.append(sorted(digests))
        if len(self.lookups) <= self.failures:
            raise RedisConnectionError("Connection refused")
        return {digest: reason for digest, reason in self.refused.items() if digest in digests}


async def test_one_lookup_of_the_distinct_tokens_marks_the_connections_of_refused_ones() -> None:
    tokens = FakeTokens(WALL)
    watch = TokenWatch(tokens, interval_s=60)
    lobby, lobby_again, lead = watch.watch(WALL), watch.watch(WALL), watch.watch(LEAD)

    marked = await watch.check()

    assert tokens.lookups == [sorted([hash_token(WALL), hash_token(LEAD)])]
    assert marked == 2
    assert lobby.refused.is_set() and lobby_again.refused.is_set()
    assert lobby.reason == f"{WALL} was revoked"
    assert not lead.refused.is_set()
    assert watch.token_count == 1  # a refused token is not looked up again


async def test_nothing_is_looked_up_without_open_connections() -> None:
    tokens = FakeTokens(WALL)
    watch = TokenWatch(tokens, interval_s=60)
    watch.unwatch(watch.watch(WALL))

    assert await watch.check() == 0
    assert tokens.lookups == []


async def test_a_closed_connection_is_no_longer_watched() -> None:
    tokens = FakeTokens(WALL)
    watch = TokenWatch(tokens, interval_s=60)
    closed, still_open = watch.watch(WALL), watch.watch(WALL)
    watch.unwatch(closed)

    await watch.check()

    assert not closed.refused.is_set()
    assert still_open.refused.is_set()


async def test_while_redis_does_not_answer_nothing_is_closed_and_checks_go_on() -> None:
    tokens = FakeTokens(OTHER_WALL, failures=3)
    marked_at_lookup: list[bool] = []

    async def lookup(digests: Sequence[str]) -> Mapping[str, str]:
        marked_at_lookup.append(revoked.refused.is_set())
        return await tokens(digests)

    watch = TokenWatch(lookup, interval_s=0.01)
    revoked = watch.watch(OTHER_WALL)
    watch.start()
    try:
        await asyncio.wait_for(revoked.refused.wait(), timeout=5)
    finally:
        await watch.stop()

    assert marked_at_lookup == [False] * (tokens.failures + 1)  # the failed checks marked nothing
    assert revoked.reason == f"{OTHER_WALL} was revoked"
