"""Live push over /ws against a real Redis change stream: snapshot, changes, unsubscribe,
heartbeat, latency metric, and a slow client dropped without slowing the others."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from tests.integration.api_harness import ApiFactory, RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration

TODAY, MONTH = "2026-11-27", "2026-11"  # the harness's fixed clock


async def receive(ws: ClientConnection, *, within: float = 5.0, skip_pings: bool = True) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=deadline - time.monotonic()))
        if not (skip_pings and message["type"] == "ping"):
            return message


async def subscribe(ws: ClientConnection, scopes: list[str] | str) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "subscribe", "scopes": scopes}))
    snapshot = await receive(ws)
    assert snapshot["type"] == "snapshot", snapshot
    return snapshot


async def test_snapshot_on_subscribe_then_changes_of_subscribed_scopes(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01", "bob": "team-01"})
    await api.write_bucket("m:alice", "day", TODAY, {"calls": 3})
    await api.write_bucket("m:alice", "month", MONTH, {"calls": 30, "revenue": 1_000_000})
    await api.write_bucket("c", "day", TODAY, {"calls": 7})
    earlier = await api.add_change([("c", "day", TODAY, {"calls": 7})])

    async with connect(api.ws_url) as ws:
        snapshot = await subscribe(ws, ["m:alice", "c"])

        assert snapshot["seq"] == earlier  # the snapshot includes every change so far
        assert set(snapshot["scopes"]) == {"m:alice", "c"}
        alice = snapshot["scopes"]["m:alice"]
        assert alice["day"]["label"] == TODAY
        assert alice["day"]["kpis"]["calls"] == 3
        assert alice["month"]["label"] == MONTH
        assert alice["month"]["kpis"]["calls"] == 30
        assert alice["month"]["kpis"]["revenue"] == "100.0000"
        assert snapshot["scopes"]["c"]["day"]["kpis"]["calls"] == 7

        await api.add_change([("m:bob", "day", TODAY, {"calls": 1})])  # not subscribed
        seq = await api.add_change(
            [("m:alice", "day", TODAY, {"calls": 4}), ("m:alice", "month", MONTH, {"calls": 31, "revenue": 1_000_000})]
        )

        day_change = await receive(ws)
        month_change = await receive(ws)

    assert day_change == {
        "type": "change",
        "seq": seq,
        "scope": "m:alice",
        "g": "day",
        "b": TODAY,
        "kpis": day_change["kpis"],
    }
    assert day_change["kpis"]["calls"] == 4
    assert (month_change["g"], month_change["b"], month_change["kpis"]["calls"]) == ("month", MONTH, 31)


async def test_star_follows_every_scope_including_new_ones(api: RunningApi) -> None:
    await api.add_managers({"alice": "team-01"})

    async with connect(api.ws_url) as ws:
        snapshot = await subscribe(ws, "*")
        assert set(snapshot["scopes"]) == {"c", "t:team-01", "m:alice"}
        assert snapshot["seq"] == "0-0"  # no change yet

        await api.add_managers({"zed": "team-02"})
        await api.add_change([("m:zed", "day", TODAY, {"meetings": 2}), ("t:team-02", "day", TODAY, {"meetings": 2})])

        first, second = await receive(ws), await receive(ws)

    assert [(m["scope"], m["kpis"]["meetings"]) for m in (first, second)] == [("m:zed", 2), ("t:team-02", 2)]


async def test_unsubscribe_stops_the_changes_of_those_scopes(api: RunningApi) -> None:
    async with connect(api.ws_url) as ws:
        await subscribe(ws, ["m:alice", "c"])
        await ws.send(json.dumps({"type": "unsubscribe", "scopes": ["m:alice"]}))
        # Messages are handled in order: once this snapshot arrives, the unsubscribe is in effect.
        await subscribe(ws, ["t:team-01"])
        await api.add_change([("m:alice", "day", TODAY, {"calls": 9})])
        await api.add_change([("c", "day", TODAY, {"calls": 9})])

        message = await receive(ws)

    assert (message["type"], message["scope"]) == ("change", "c")


async def test_open_pipeline_changes_are_pushed(api: RunningApi) -> None:
    async with connect(api.ws_url) as ws:
        snapshot = await subscribe(ws, ["m:alice"])
        assert snapshot["scopes"]["m:alice"]["pipeline"]["open_deals"] == 0

        await api.add_change(current=[("m:alice", {"pipe_n:qualified": 2, "pipe_amt:qualified": 80_000_000})])

        message = await receive(ws)

    assert message["type"] == "pipeline"
    assert message["scope"] == "m:alice"
    assert message["pipeline"]["stages"]["qualified"]["open_deals"] == 2
    assert message["pipeline"]["weighted_pipeline"] == "2000.0000"


async def test_server_heartbeat(api_factory: ApiFactory) -> None:
    async with api_factory(api={"ws_heartbeat_s": 0.2}) as api, connect(api.ws_url) as ws:
        assert await receive(ws, skip_pings=False) == {"type": "ping"}
        assert await receive(ws, skip_pings=False) == {"type": "ping"}


async def test_messages_the_server_cannot_understand_get_an_error(api: RunningApi) -> None:
    async with connect(api.ws_url) as ws:
        await ws.send("hello")
        not_json = await receive(ws)
        await ws.send(b'{"type": "dance"}')
        unknown_type = await receive(ws)
        await ws.send(json.dumps({"type": "subscribe", "scopes": ["alice"]}))
        bad_scope = await receive(ws)
        snapshot = await subscribe(ws, ["c"])  # the connection is still usable

    assert not_json["type"] == "error"
    assert "could not understand 'hello'" in not_json["message"]
    assert unknown_type["type"] == "error"
    assert "dance" in unknown_type["message"]
    assert bad_scope["type"] == "error"
    assert "'alice' is not a scope" in bad_scope["message"]
    assert set(snapshot["scopes"]) == {"c"}


async def test_event_to_push_latency_is_observed_once_per_change(api: RunningApi) -> None:
    async with connect(api.ws_url) as first, connect(api.ws_url) as second:
        await subscribe(first, ["c"])
        await subscribe(second, "*")
        produced_ms = int(time.time() * 1000) - 1500

        await api.add_change(
            [("c", "day", TODAY, {"calls": 1}), ("c", "month", MONTH, {"calls": 1})], produced_ms=produced_ms
        )
        for ws in (first, second):
            assert (await receive(ws))["type"] == "change"
            assert (await receive(ws))["type"] == "change"
        samples = await api.metric_samples()

    assert samples[("crm_event_to_push_seconds_count", ())] == 1
    assert 1.5 <= samples[("crm_event_to_push_seconds_sum", ())] < 10
    assert samples[("crm_event_to_push_seconds_bucket", (("le", "1.0"),))] == 0
    assert samples[("crm_event_to_push_seconds_bucket", (("le", "2.5"),))] == 1
    assert samples[("crm_event_to_push_seconds_bucket", (("le", "0.005"),))] == 0
    assert samples[("crm_ws_clients", ())] == 2


def _slow_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so unread messages back up at the server quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_a_slow_client_is_dropped_while_others_keep_receiving(api_factory: ApiFactory) -> None:
    async with api_factory(api={"ws_client_queue": 200}) as api:
        fast = await connect(api.ws_url, compression=None, max_queue=None)
        slow = await connect(api.ws_url, sock=_slow_socket(api.port), compression=None, max_queue=1)
        try:
            await subscribe(fast, "*")
            await subscribe(slow, "*")
            received: list[dict[str, Any]] = []

            async def read_fast() -> None:
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        received.append(json.loads(await fast.recv()))

            reader = asyncio.create_task(read_fast())
            # Bulky changes, until the slow client (which reads nothing) is dropped.
            fat = {f"src_created:source-{i:03d}": i + 1 for i in range(40)}
            sent = 0

            async def slow_client_dropped() -> bool:
                nonlocal sent
                if (await api.metric_samples())[("crm_ws_clients", ())] == 1:
                    return True
                for _ in range(20):
                    sent += 1
                    await api.add_change([(f"m:bulk-{i}", "day", TODAY, {**fat, "calls": sent}) for i in range(25)])
                return False

            await api.eventually(slow_client_dropped, within=60, interval=0, what="the slow client to be dropped")
            marker = await api.add_change([("c", "day", TODAY, {"calls": 424242})])
            await api.eventually(
                lambda: any(m.get("seq") == marker for m in received), what="the marker at the fast client"
            )
            reader.cancel()

            # The slow client gets everything queued so far, then the close frame: code 1013.
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(slow.recv(), timeout=15)
            samples = await api.metric_samples()
        finally:
            await fast.close()
            await slow.close()

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1013
    assert closed.value.rcvd.reason.startswith("too slow: more than 200 updates queued")
    changes = [m for m in received if m["type"] == "change"]
    assert len(changes) == sent * 25 + 1  # the fast client missed nothing
    assert samples[("crm_ws_dropped_clients_total", ())] == 1
    assert samples[("crm_ws_clients", ())] == 1
