"""Many WebSocket clients on one API process, one of them stalled: the others get every change, in
order, and the stalled one is cut off with close code 1013."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from tests.integration.api_harness import ApiFactory, RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration

TODAY = "2026-11-27"  # the harness's fixed clock
CLIENTS = 50
QUEUE = 1000


class StalledClient:
    """A WebSocket client on a raw socket that subscribes, then never reads: its TCP window fills up."""

    def __init__(self, port: int, target: str) -> None:
        self.target = target
        """The request target: /ws and its query (the token)."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.port = port
        self.buffer = b""

    def open(self, subscribe: dict[str, Any]) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {self.target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.sock.sendall(_client_frame(json.dumps(subscribe).encode()))

    def read_until_close(self, within: float) -> tuple[int, str]:
        """Read (now at last) everything the server queued, up to its close frame: (code, reason)."""
        self.sock.settimeout(within)
        while True:
            frame = self._frame()
            if frame is None:
                self.buffer += self.sock.recv(65536) or _closed()
                continue
            opcode, payload = frame
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, payload[2:].decode(errors="replace")

    def _frame(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        opcode, length, start = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                return None
            length, start = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            if len(data) < 10:
                return None
            length, start = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < start + length:
            return None
        self.buffer = data[start + length :]
        return opcode, data[start : start + length]

    def close(self) -> None:
        self.sock.close()


def _closed() -> bytes:
    raise AssertionError("the server closed the TCP connection without a close frame")


def _client_frame(payload: bytes) -> bytes:
    """One masked text frame (clients must mask)."""
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _read_all(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            into.append(json.loads(raw))


async def test_a_stalled_client_is_cut_off_while_many_others_get_every_change_in_order(api_factory: ApiFactory) -> None:
    async with api_factory(api={"ws_client_queue": QUEUE}) as api:
        clients = [await connect(api.ws_url, compression=None, max_queue=None) for _ in range(CLIENTS - 1)]
        target = api.ws_url[api.ws_url.index("/ws") :]
        stalled = await asyncio.to_thread(StalledClient, api.port, target)
        received: list[list[dict[str, Any]]] = [[] for _ in clients]
        readers: list[asyncio.Task[None]] = []
        try:
            for ws in clients:
                await ws.send(json.dumps({"type": "subscribe", "scopes": "*"}))
            await asyncio.to_thread(stalled.open, {"type": "subscribe", "scopes": "*"})
            readers = [asyncio.create_task(_read_all(ws, into)) for ws, into in zip(clients, received, strict=True)]
            await api.eventually(
                lambda: all(any(m["type"] == "snapshot" for m in into) for into in received), what="every snapshot"
            )
            await api.eventually(
                lambda: api.app.state.broadcaster.client_count == CLIENTS, what="the stalled client's connection"
            )
            sent: list[str] = []
            fat = {f"src_created:source-{i:03d}": i + 1 for i in range(40)}  # bulky: fills the TCP window fast

            async def stalled_client_dropped() -> bool:
                if await _dropped(api) == 1:
                    return True
                for _ in range(10):
                    # A bucket of its own every time, so that no change coalesces with another.
                    n = len(sent)
                    sent.append(await api.add_change([(f"m:bulk-{n}", "day", TODAY, {**fat, "calls": n})]))
                return False

            await api.eventually(stalled_client_dropped, within=120, interval=0, what="the stalled client dropped")
            marker = await api.add_change([("c", "day", TODAY, {"calls": 424242})])
            sent.append(marker)
            await api.eventually(
                lambda: all(into and into[-1].get("seq") == marker for into in received),
                within=60,
                what="the marker at every other client",
            )
            code, reason = await asyncio.to_thread(stalled.read_until_close, 30)
            samples = await api.metric_samples()
        finally:
            for task in readers:
                task.cancel()
            for ws in clients:
                await ws.close()
            stalled.close()

    assert (code, reason.startswith(f"too slow: more than {QUEUE} updates queued")) == (1013, True), (code, reason)
    for into in received:
        changes = [m["seq"] for m in into if m["type"] == "change"]
        assert changes == sent  # every change, in order, once
    assert samples[("crm_ws_dropped_clients_total", ())] == 1
    assert samples[("crm_ws_clients", ())] == CLIENTS - 1


async def _dropped(api: RunningApi) -> float:
    return (await api.metric_samples())[("crm_ws_dropped_clients_total", ())]
