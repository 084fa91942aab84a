"""Live push over WebSocket: snapshot (or replay) on subscribe, then every change of the subscribed scopes.

Protocol: docs/websocket.md. Each session runs two tasks: one reads the client's messages
(subscribe, unsubscribe), one is the only writer to the socket (snapshots, replays, changes and
alerts from the client's queue, errors, heartbeat). A session whose queue overflows is closed
with 1013; one whose token is revoked meanwhile (``dashboard_api.token_watch``) gets an error and
is closed with 4401. Requested scopes are checked in one place, ``_Session.permitted_scopes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from redis.exceptions import RedisError

from dashboard_api.auth import (
    CLOSE_UNAUTHORIZED,
    LiveGate,
    ScopeFilter,
    SubscriptionRefused,
    get_access,
    websocket_principal,
    websocket_token,
)
from dashboard_api.broadcaster import (
    AlertReplayRequest,
    ChangeBroadcaster,
    LiveClient,
    OutgoingAlert,
    OutgoingChange,
    OutgoingText,
    ReplayGap,
    ResumeRequest,
    SnapshotRequest,
    position,
)
from dashboard_api.changes import seq_key
from dashboard_api.dependencies import (
    BroadcasterDep,
    KeysDep,
    RedisDep,
    SettingsDep,
)
from dashboard_api.errors import ChangeFeedError
from dashboard_api.live_messages import (
    PIPELINE,
    ErrorMessage,
    ResumedMessage,
    SubscribeRequest,
    UnsubscribeRequest,
    client_message_adapter,
)
from dashboard_api.token_watch import TokenWatch, WatchedToken
from services.kpi_reader import list_all_scopes, read_live_snapshot
from services.kpis.measures import derive_kpis, derive_pipeline
from services.kpis.periods import local_date

router = APIRouter(tags=["live"])
log = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TIMEOUT_S = 10.0
REFUSED_CLOSE_REASON = "unauthorized: the API token is no longer valid"
YIELD_EVERY = 200


class _Session:
    """One connected client: its queue and subscriptions, and the socket it alone writes to."""

    def __init__(
        self,
        websocket: WebSocket,
        client: LiveClient,
        settings: SettingsDep,
        redis: RedisDep,
        keys: KeysDep,
        broadcaster: ChangeBroadcaster,
        gate: LiveGate,
    ) -> None:
        self.websocket = websocket
        self.gate = gate
        self.client = client
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.broadcaster = broadcaster
        self.probabilities = {stage.name: stage.probability for stage in settings.business.funnel}
        self.roster_scopes: frozenset[str] | None = None
        """For a team-bound principal subscribed to "*": the scopes that stood for (None: not so subscribed)."""
        self.alert_roster: frozenset[str] | None = None
        """For a team-bound principal following the alert ticker: the managers its filter holds."""

    def _error(self, message: str) -> None:
        self.client.offer(OutgoingText(ErrorMessage(message=message).model_dump_json()))

    async def permitted_scopes(self, requested: Literal["*"] | list[str]) -> Literal["*"] | list[str]:
        """The one place where the scopes a subscribe asks for are checked (the token's role, see
        docs/access.md): return those the client may follow, or raise ScopeNotPermitted (answered with an error)."""
        try:
            return await self.gate.permitted(requested)
        except SubscriptionRefused as exc:
            raise ScopeNotPermitted(str(exc)) from None

    async def receive_loop(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            try:
                request = client_message_adapter.validate_json(text)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors())
                self._error(
                    f'could not understand {text[:200]!r}: {problems}; send {{"type": "subscribe", "scopes": ["c"]}}'
                )
                continue
            if isinstance(request, SubscribeRequest):
                await self._subscribe(request)
            elif isinstance(request, UnsubscribeRequest):
                self.client.unsubscribe(None if request.scopes == "*" else tuple(request.scopes))
                if request.scopes == "*":
                    self.roster_scopes = None

    async def _subscribe(self, request: SubscribeRequest) -> None:
        try:
            scopes = await self.permitted_scopes(request.scopes)
        except ScopeNotPermitted as exc:
            self._error(str(exc))
            return
        if scopes == "*" or scopes or not request.alerts:
            resume = None if request.since is None else (request.since, request.since_i)
            self.client.subscribe(None if scopes == "*" else tuple(scopes), kpis=request.kpis, resume=resume)
        elif request.kpis is not None:
            self.client.kpis = frozenset(request.kpis)
        team_bound = self.gate.principal.team_bound
        if request.scopes == "*" and team_bound and scopes != "*":
            self.roster_scopes = frozenset(scopes)
        if request.alerts:
            readable = await self.gate.alert_filter()
            self.client.subscribe_alerts(readable, request.alerts_since)
            self.alert_roster = frozenset(readable.roster) if team_bound else None

    async def follow_roster(self, interval_s: float) -> None:
        """For a team-bound principal: follow the managers who join its team while connected.

        "*" stood for the team and the managers seen with it at the subscribe; the alert ticker's
        filter held those managers. Every ``interval_s`` the team's managers are read again: a
        manager seen with the team since is subscribed (a snapshot of its scope first, then its
        changes) and let through the ticker. If Redis does not answer, the next interval tries again.
        """
        principal = self.gate.principal
        while True:
            await asyncio.sleep(interval_s)
            if self.roster_scopes is None and self.alert_roster is None:
                continue
            try:
                roster = frozenset(await self.gate.access.roster(principal))
            except (RedisError, OSError) as exc:
                log.debug("team roster not read (%s); trying again in %.1f s", exc, interval_s)
                continue
            if self.roster_scopes is not None:
                now = frozenset(principal.allowed_scopes(roster) or ())
                joined, left = now - self.roster_scopes, self.roster_scopes - now
                if joined:
                    self.client.subscribe(tuple(sorted(joined)))
                if left:
                    self.client.unsubscribe(tuple(sorted(left)))
                self.roster_scopes = now
            if self.alert_roster is not None and roster != self.alert_roster:
                self.client.alerts = ScopeFilter(principal, roster)
                self.alert_roster = roster

    async def send_loop(self) -> None:
        drained = 0
        client = self.client
        send_text = self.websocket.send_text
        while True:
            item = client.get_nowait()
            if item is None:
                await client.wait()  # the broadcaster queues a ping every heartbeat interval
                continue
            # Drain without a round trip through the event loop per message, yielding now and
            # then so that one long backlog does not hold up the other sessions.
            drained += 1
            if drained % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if isinstance(item, OutgoingChange):
                if client.is_news(item):
                    await send_text(item.text)
            elif isinstance(item, OutgoingAlert):
                if item.seq > client.alerts_floor:
                    await send_text(item.text)
            elif isinstance(item, SnapshotRequest):
                await self._send_snapshot(item)
            elif isinstance(item, ResumeRequest):
                await self._replay(item)
            elif isinstance(item, AlertReplayRequest):
                await self._replay_alerts(item)
            elif isinstance(item, OutgoingText):
                await send_text(item.text)

    async def _replay(self, request: ResumeRequest) -> None:
        """The changes missed since the resume point, or a fresh snapshot when the feed no longer has them."""
        try:
            texts, last = await self.broadcaster.replay(self.client, request)
        except ReplayGap as exc:
            log.info("live resume from %s not possible (%s): sending a fresh snapshot", request.since, exc)
            await self._send_snapshot(SnapshotRequest(request.scopes, resync=True))
            return
        except (RedisError, OSError, ChangeFeedError) as exc:
            log.warning("live resume from %s failed: %s", request.since, exc)
            await self._send_snapshot(SnapshotRequest(request.scopes, resync=True))
            return
        for text in texts:
            await self.websocket.send_text(text)
        self.client.caught_up(request.scopes, position(seq_key(last)))
        await self.websocket.send_text(
            ResumedMessage(since=request.since, seq=last, replayed=len(texts)).model_dump_json()
        )

    async def _replay_alerts(self, request: AlertReplayRequest) -> None:
        try:
            alerts = await self.broadcaster.replay_alerts(request.since, request.readable)
        except (RedisError, OSError) as exc:
            await self.websocket.send_text(
                ErrorMessage(
                    message=f"alert replay unavailable (Redis: {exc}); load /api/v1/alerts/history"
                ).model_dump_json()
            )
            return
        for alert in alerts:
            if alert.seq > self.client.alerts_floor:
                await self.websocket.send_text(alert.text)
                self.client.alerts_floor = alert.seq

    async def _send_snapshot(self, request: SnapshotRequest) -> None:
        now = self.websocket.app.state.clock()
        today = local_date(now, self.settings.business.zone)
        try:
            scopes = (
                list(request.scopes) if request.scopes is not None else await list_all_scopes(self.redis, self.keys)
            )
            snapshot = await read_live_snapshot(self.redis, self.keys, scopes, today)
        except (RedisError, OSError) as exc:
            log.warning("live snapshot failed: %s", exc)
            await self.websocket.send_text(
                ErrorMessage(message=f"snapshot unavailable (Redis: {exc}); subscribe again").model_dump_json()
            )
            return
        kpis = self.client.kpis

        def only(values: dict[str, Any]) -> dict[str, Any]:
            return values if kpis is None else {name: value for name, value in values.items() if name in kpis}

        scope_snapshots: dict[str, Any] = {}
        for scope in scopes:
            entry: dict[str, Any] = {
                "day": {
                    "label": snapshot.day_label,
                    "kpis": only(derive_kpis(snapshot.days[scope]).model_dump(mode="json")),
                },
                "month": {
                    "label": snapshot.month_label,
                    "kpis": only(derive_kpis(snapshot.months[scope]).model_dump(mode="json")),
                },
            }
            if kpis is None or PIPELINE in kpis:
                entry["pipeline"] = derive_pipeline(snapshot.current[scope], self.probabilities).model_dump(mode="json")
            scope_snapshots[scope] = entry
        message = {"type": "snapshot", "seq": snapshot.seq, "resync": request.resync, "scopes": scope_snapshots}
        self.client.snapshot_taken(request.scopes, seq_key(snapshot.seq))
        await self.websocket.send_text(orjson.dumps(message).decode())


class ScopeNotPermitted(Exception):
    """A subscribe named a scope the client may not follow (it gets an error message; the connection stays)."""


@router.websocket("/ws", name="live")
async def live_updates(
    websocket: WebSocket,
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    broadcaster: BroadcasterDep,
) -> None:
    """Live KPI push (see docs/websocket.md)."""
    await websocket.accept()
    access = get_access(websocket)
    principal = await websocket_principal(websocket, access)
    if principal is None:  # told why, and closed with 4401
        return
    client = LiveClient(settings.api.ws_client_queue)
    session = _Session(websocket, client, settings, redis, keys, broadcaster, LiveGate(access, principal))
    token_watch: TokenWatch = websocket.app.state.token_watch
    token = websocket_token(websocket)
    watched: WatchedToken | None = token_watch.watch(token) if access.enabled and token else None
    broadcaster.register(client)
    tasks = {
        asyncio.create_task(session.receive_loop(), name="ws-receive"),
        asyncio.create_task(session.send_loop(), name="ws-send"),
        asyncio.create_task(client.overflowed.wait(), name="ws-overflow"),
    }
    if watched is not None:
        tasks.add(asyncio.create_task(watched.refused.wait(), name="ws-token-refused"))
    if principal.team_bound:
        tasks.add(asyncio.create_task(session.follow_roster(settings.api.ws_token_recheck_s), name="ws-roster"))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        broadcaster.unregister(client)
        if watched is not None:
            token_watch.unwatch(watched)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(
            result, (asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError)
        ):
            log.error("live session ended by an error", exc_info=result)
    if watched is not None and watched.refused.is_set():
        error = ErrorMessage(message=f"unauthorized: {watched.reason}").model_dump_json()
        await _close(websocket, CLOSE_UNAUTHORIZED, REFUSED_CLOSE_REASON, error=error)
    elif client.overflowed.is_set():
        reason = f"too slow: more than {client.queue_size} updates queued; reconnect and subscribe again"
        await _close(websocket, CLOSE_TRY_AGAIN_LATER, reason)


async def _close(websocket: WebSocket, code: int, reason: str, *, error: str | None = None) -> None:
    """Send the error message, if any, and close; a client already gone (or stuck) is let go."""

    async def tell_and_close() -> None:
        if error is not None:
            await websocket.send_text(error)
        await websocket.close(code=code, reason=reason)

    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await tell_and_close()
