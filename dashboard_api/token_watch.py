"""Re-checks the tokens of this process's open WebSocket connections, so that revoking one cuts them.

A token is checked when a connection opens (``dashboard_api.auth.websocket_principal``). So that
revoking it also reaches the connections already open, one task per process looks up the distinct
tokens of its open connections every ``api.ws_token_recheck_s`` in one Redis round trip (an HMGET
of their hashes, ``TokenStore.refused``) and marks the connections of each refused token; their
sessions then send an error and close with 4401 (``dashboard_api.routers.live``). The fan-out of
changes never waits for it. When Redis does not answer, nothing is closed and the check runs again
at the next interval: an outage must not drop every wall display.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from services.auth import hash_token, token_id_of

log = logging.getLogger(__name__)

RefusedTokens = Callable[[Sequence[str]], Awaitable[Mapping[str, str]]]
"""Of these token hashes, those refused now, with why (``TokenStore.refused``)."""
MIN_CHECK_TIMEOUT_S = 2.0
"""A check may take at least this long before it counts as Redis not answering (else: the interval)."""


@dataclass(eq=False)
class WatchedToken:
    """The token of one open connection; ``refused`` is set, with ``reason``, once the token is refused."""

    digest: str
    refused: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""


class TokenWatch:
    """The tokens of the open WebSocket connections of this process, checked again every interval."""

    def __init__(self, refused_tokens: RefusedTokens, *, interval_s: float) -> None:
        self._refused_tokens = refused_tokens
        self._interval_s = interval_s
        self._watched: dict[str, set[WatchedToken]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def token_count(self) -> int:
        """Distinct tokens watched (what one check looks up)."""
        return len(self._watched)

    def watch(self, token: str) -> WatchedToken:
        """Watch the token of a connection that just opened (its token was accepted)."""
        watched = WatchedToken(hash_token(token))
        self._watched.setdefault(watched.digest, set()).add(watched)
        return watched

    def unwatch(self, watched: WatchedToken) -> None:
        """The connection closed."""
        connections = self._watched.get(watched.digest)
        if connections is not None:
            connections.discard(watched)
            if not connections:
                del self._watched[watched.digest]

    async def check(self) -> int:
        """Look up every watched token once and mark the connections of those refused; how many were marked.

        Raises what the lookup raises (``RedisError``, ``OSError``), marking nothing.
        """
        if not self._watched:
            return 0
        refusals = await self._refused_tokens(list(self._watched))
        marked = 0
        for digest, reason in refusals.items():
            # Popped: a refused token stays refused, so its connections are not looked up again.
            connections = self._watched.pop(digest, set())
            for watched in connections:
                watched.reason = reason
                watched.refused.set()
            marked += len(connections)
            log.info("closing %d live connection(s) of API token %s: %s", len(connections), token_id_of(digest), reason)
        return marked

    # -- lifecycle --

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ws-token-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        timeout_s = max(self._interval_s, MIN_CHECK_TIMEOUT_S)
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (stop())
                # that arrives as the check completes, and the loop would then never end.
                async with asyncio.timeout(timeout_s):
                    await self.check()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning(
                    "token re-check: Redis did not answer (%s); %d token(s) of open live connections stay "
                    "accepted until the next check in %.1f s",
                    str(exc) or type(exc).__name__,
                    len(self._watched),
                    self._interval_s,
                )
            except Exception:
                # A watch that stopped would leave revoked tokens streaming: log and keep checking.
                log.exception("token re-check failed; checking again in %.1f s", self._interval_s)
