"""Live push over /ws against a real Redis change stream: snapshot, changes, unsubscribe,
heartbeat, latency metric, KPI filters, resume after a reconnect, the alert ticker.
(Many clients with a stalled one: test_api_live_fanout.py; several API processes: test_api_live_scaleout.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from services.topics import AlertNames

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


async def subscribe(ws: ClientConnection, scopes: list[str] | str, **extra: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "subscribe", "scopes": scopes, **extra}))
    snapshot = await receive(ws)
    assert snapshot["type"] == "snapshot", snapshot
    return snapshot


async def receive_until(ws: ClientConnection, kind: str, *, within: float = 10.0) -> list[dict[str, Any]]:
    """Every message up to and including the first of this type."""
    messages: list[dict[str, Any]] = []
    while not messages or messages[-1]["type"] != kind:
        messages.append(await receive(ws, within=within))
    return messages


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
        "i": 0,
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


async def test_a_kpi_filter_narrows_snapshots_and_changes_and_skips_changes_that_touch_none(api: RunningApi) -> None:
    await api.write_bucket("c", "day", TODAY, {"calls": 3, "revenue": 500_000})
    await api.write_current("c", {"pipe_n:new": 1, "pipe_amt:new": 10_000})

    async with connect(api.ws_url) as ws:
        snapshot = await subscribe(ws, ["c"], kpis=["calls", "revenue"])
        await api.add_change([("c", "day", TODAY, {"calls": 4, "revenue": 500_000})])
        first = await receive(ws)
        await api.add_change([("c", "day", TODAY, {"calls": 4, "revenue": 500_000, "meetings": 1})])  # neither KPI
        await api.add_change(current=[("c", {"pipe_n:new": 2, "pipe_amt:new": 20_000})])  # no "pipeline" asked
        last = await api.add_change([("c", "day", TODAY, {"calls": 5, "revenue": 500_000, "meetings": 1})])
        second = await receive(ws)

    assert snapshot["scopes"]["c"]["day"]["kpis"] == {"calls": 3, "revenue": "50.0000"}
    assert "pipeline" not in snapshot["scopes"]["c"]
    assert first["kpis"] == {"calls": 4, "revenue": "50.0000"}
    assert (second["seq"], second["kpis"]) == (last, {"calls": 5, "revenue": "50.0000"})


async def test_an_unknown_kpi_in_a_filter_gets_an_error(api: RunningApi) -> None:
    async with connect(api.ws_url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "scopes": ["c"], "kpis": ["calls", "happiness"]}))
        error = await receive(ws)

    assert error["type"] == "error"
    assert "unknown KPI(s) ['happiness']" in error["message"]


def position(message: dict[str, Any]) -> tuple[int, int, int]:
    millis, counter = message["seq"].split("-")
    return int(millis), int(counter), message["i"]


async def test_resume_replays_exactly_the_missed_changes_in_order(api: RunningApi) -> None:
    first_part: list[dict[str, Any]] = []
    async with connect(api.ws_url) as ws:
        await subscribe(ws, ["c", "m:alice"])
        await api.add_change([("c", "day", TODAY, {"calls": 1})])
        # One entry of two buckets: the connection drops after the first of them.
        await api.add_change([("m:alice", "day", TODAY, {"calls": 1}), ("c", "month", MONTH, {"calls": 20})])
        first_part.append(await receive(ws))
        first_part.append(await receive(ws))
    last = first_part[-1]
    assert (last["scope"], last["i"]) == ("m:alice", 0)

    # Missed while away: the rest of that entry, changes of both scopes, and one of a scope not followed.
    await api.add_change([("m:bob", "day", TODAY, {"calls": 7})])
    await api.add_change([("m:alice", "month", MONTH, {"calls": 5})])
    await api.add_change([("c", "day", TODAY, {"calls": 2})])
    await api.add_change([("c", "day", TODAY, {"calls": 3})])  # the replay sends a bucket once, with its newest

    async with connect(api.ws_url) as ws:
        await ws.send(
            json.dumps({"type": "subscribe", "scopes": ["c", "m:alice"], "since": last["seq"], "since_i": last["i"]})
        )
        replayed = await receive_until(ws, "resumed")
        live_seq = await api.add_change([("c", "day", TODAY, {"calls": 4})])
        live = await receive(ws)

    resumed = replayed.pop()
    changes = [(m["scope"], m["g"], m["kpis"]["calls"]) for m in replayed]
    assert changes == [
        ("c", "month", 20),  # the rest of the entry the connection dropped in
        ("m:alice", "month", 5),
        ("c", "day", 3),
    ]
    assert [m["type"] for m in replayed] == ["change"] * 3
    every = [position(m) for m in [*first_part, *replayed]]
    assert every == sorted(set(every))  # in order, none twice across the boundary
    assert resumed == {"type": "resumed", "since": last["seq"], "seq": replayed[-1]["seq"], "replayed": 3}
    assert (live["seq"], live["kpis"]["calls"]) == (live_seq, 4)  # then live, nothing repeated


async def test_changes_while_the_replay_runs_are_sent_once(api: RunningApi) -> None:
    async with connect(api.ws_url) as ws:
        snapshot = await subscribe(ws, ["c"])
    seqs = [await api.add_change([("c", "day", TODAY, {"calls": n})]) for n in range(1, 201)]

    async with connect(api.ws_url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "scopes": ["c"], "since": snapshot["seq"]}))

        async def more() -> list[str]:
            return [await api.add_change([("c", "day", TODAY, {"calls": n})]) for n in range(201, 301)]

        writing = asyncio.create_task(more())
        received: list[dict[str, Any]] = []
        while not (
            any(m["type"] == "resumed" for m in received)
            and any(m.get("kpis", {}).get("calls") == 300 for m in received)
        ):
            received.append(await receive(ws))
        seqs += await writing

    changes = [m for m in received if m["type"] == "change"]
    assert [m["type"] for m in received].count("resumed") == 1
    got = [m["seq"] for m in changes]
    assert got == sorted(set(got), key=lambda seq: tuple(map(int, seq.split("-"))))  # in order, no repeats
    # Values are absolute: whatever was coalesced, the last value is the newest, and nothing after it is missing.
    assert got[-1] == seqs[-1]
    assert set(got) <= set(seqs)


async def test_resuming_from_before_what_the_feed_holds_gets_a_fresh_snapshot(api: RunningApi) -> None:
    old = await api.add_change([("c", "day", TODAY, {"calls": 1})])
    await api.add_change([("c", "day", TODAY, {"calls": 2})])
    newest = await api.add_change([("c", "day", TODAY, {"calls": 3})])
    await api.write_bucket("c", "day", TODAY, {"calls": 3})
    await api.redis.xtrim(
        api.keys.changes, maxlen=1, approximate=False
    )  # as the relay trims entries past the resume window

    async with connect(api.ws_url) as ws:
        snapshot = await subscribe(ws, ["c"], since=old)
        await ws.send(json.dumps({"type": "subscribe", "scopes": ["c"], "since": "9999999999999-0"}))
        from_the_future = await receive(ws)

    assert snapshot["resync"] is True
    assert snapshot["seq"] == newest
    assert snapshot["scopes"]["c"]["day"]["kpis"]["calls"] == 3
    assert (from_the_future["type"], from_the_future["resync"]) == ("snapshot", True)


async def test_the_alert_ticker_pushes_alert_history_entries(api: RunningApi) -> None:
    history = AlertNames.from_settings(api.settings).history
    state = {
        "kind": "state",
        "at": "2026-11-27T12:00:00+00:00",
        "rule_id": "low-calls",
        "scope": "c",
        "fingerprint": "f1",
        "from": "pending",
        "to": "firing",
        "reason": "for_elapsed",
        "value": "2",
        "labels": {"alertname": "Low calls", "severity": "critical"},
    }
    earlier = await api.redis.xadd(history, {"data": json.dumps(state)})

    async with connect(api.ws_url) as ticker, connect(api.ws_url) as kpis_only:
        await ticker.send(json.dumps({"type": "subscribe", "alerts": True, "alerts_since": "0-0"}))
        replayed = await receive(ticker)
        await subscribe(kpis_only, ["c"])
        resolved = {**state, "from": "firing", "to": "resolved", "value": "9"}
        live_seq = await api.redis.xadd(history, {"data": json.dumps(resolved)})
        await api.add_change([("c", "day", TODAY, {"calls": 1})])
        live = await receive(ticker)
        only_change = await receive(kpis_only)

    assert replayed == {
        "type": "alert",
        "seq": earlier,
        "kind": "state",
        "at": "2026-11-27T12:00:00+00:00",
        "alertname": "Low calls",
        "severity": "critical",
        "rule_id": "low-calls",
        "scope": "c",
        "fingerprint": "f1",
        "from": "pending",
        "to": "firing",
        "value": "2",
    }
    assert (live["type"], live["seq"], live["to"]) == ("alert", live_seq, "resolved")
    assert only_change["type"] == "change"  # no alerts for a client that did not ask
