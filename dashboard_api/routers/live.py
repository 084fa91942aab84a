"""Live push over WebSocket: snapshot on subscribe, then every change of the subscribed scopes.

Protocol: docs/websocket.md. Each session runs two tasks: one reads the client's messages
(subscribe, unsubscribe), one is the only writer to the socket (snapshots, changes from the
client's queue, errors, heartbeat). A session whose queue overflows is closed with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from redis.exceptions import RedisError

from dashboard_api.broadcaster import LiveClient, OutgoingChange, OutgoingText, QueueItem, SnapshotRequest
from dashboard_api.changes import seq_key
from dashboard_api.dependencies import (
    BroadcasterDep,
    KeysDep,
    RedisDep,
    SettingsDep,
)
from dashboard_api.live_messages import (
    BucketKpis,
    ErrorMessage,
    PingMessage,
    ScopeSnapshot,
    SnapshotMessage,
    SubscribeRequest,
    UnsubscribeRequest,
    client_message_adapter,
)
from services.kpi_reader import list_all_scopes, read_live_snapshot
from services.kpis.measures import derive_kpis, derive_pipeline
from services.kpis.periods import local_date

router = APIRouter(tags=["live"])
log = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TIMEOUT_S = 10.0
PING_TEXT = PingMessage().model_dump_json()
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
    ) -> None:
        self.websocket = websocket
        self.client = client
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.probabilities = {stage.name: stage.probability for stage in settings.business.funnel}

    def _error(self, message: str) -> None:
        self.client.offer(OutgoingText(ErrorMessage(message=message).model_dump_json()))

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
                self.client.subscribe(None if request.scopes == "*" else tuple(request.scopes))
            elif isinstance(request, UnsubscribeRequest):
                self.client.unsubscribe(None if request.scopes == "*" else tuple(request.scopes))

    async def send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        heartbeat = self.settings.api.ws_heartbeat_s
        next_ping = loop.time() + heartbeat
        drained = 0
        while True:
            item: QueueItem | None
            if self.client.queue.empty():
                try:
                    item = await asyncio.wait_for(self.client.queue.get(), timeout=max(0.0, next_ping - loop.time()))
                except TimeoutError:
                    item = None
            else:
                # Drain without a round trip through the event loop per message, yielding now and
                # then so that one long backlog does not hold up the other sessions.
                item = self.client.queue.get_nowait()
                drained += 1
                if drained % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            if loop.time() >= next_ping:
                await self.websocket.send_text(PING_TEXT)
                next_ping = loop.time() + heartbeat
            if isinstance(item, OutgoingChange):
                if self.client.is_news(item):
                    await self.websocket.send_text(item.text)
            elif isinstance(item, SnapshotRequest):
                await self._send_snapshot(item)
            elif isinstance(item, OutgoingText):
                await self.websocket.send_text(item.text)

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
        message = SnapshotMessage(
            seq=snapshot.seq,
            scopes={
                scope: ScopeSnapshot(
                    day=BucketKpis(label=snapshot.day_label, kpis=derive_kpis(snapshot.days[scope])),
                    month=BucketKpis(label=snapshot.month_label, kpis=derive_kpis(snapshot.months[scope])),
                    pipeline=derive_pipeline(snapshot.current[scope], self.probabilities),
                )
                for scope in scopes
            },
        )
        self.client.snapshot_taken(request.scopes, seq_key(snapshot.seq))
        await self.websocket.send_text(message.model_dump_json())


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
    client = LiveClient(settings.api.ws_client_queue)
    session = _Session(websocket, client, settings, redis, keys)
    broadcaster.register(client)
    tasks = {
        asyncio.create_task(session.receive_loop(), name="ws-receive"),
        asyncio.create_task(session.send_loop(), name="ws-send"),
        asyncio.create_task(client.overflowed.wait(), name="ws-overflow"),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        broadcaster.unregister(client)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(
            result, (asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError)
        ):
            log.error("live session ended by an error", exc_info=result)
    if client.overflowed.is_set():
        reason = f"too slow: more than {client.queue_size} updates queued; reconnect and subscribe again"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason=reason), timeout=CLOSE_TIMEOUT_S)
