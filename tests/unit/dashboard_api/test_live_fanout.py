"""Fan-out of changes to live clients: subscriptions, snapshot floors, overflow, the latency metric."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from dashboard_api.broadcaster import ChangeBroadcaster, LiveClient, OutgoingChange, SnapshotRequest
from dashboard_api.changes import BucketChange, ChangeEntry, CurrentChange
from dashboard_api.metrics import ApiMetrics

PROBABILITIES = {"new": Decimal("0.1"), "won_soon": Decimal("0.9")}


def entry(seq: str, *scopes: str, produced_ms: int | None = None, current: tuple[str, ...] = ()) -> ChangeEntry:
    return ChangeEntry(
        seq=seq,
        produced_ms=produced_ms,
        committed_ms=None,
        buckets=tuple(BucketChange(scope, "day", "2026-11-27", {"calls": 1}) for scope in scopes),
        current=tuple(CurrentChange(scope, {"pipe_n:new": 1, "pipe_amt:new": 10_000}) for scope in current),
    )


def broadcaster() -> tuple[ChangeBroadcaster, ApiMetrics]:
    metrics = ApiMetrics()
    return ChangeBroadcaster(redis=None, keys=None, metrics=metrics, probabilities=PROBABILITIES), metrics  # type: ignore[arg-type]


def drain(client: LiveClient) -> list[Any]:
    items = []
    while not client.queue.empty():
        items.append(client.queue.get_nowait())
    return items


def histogram_count(metrics: ApiMetrics) -> float:
    value = metrics.registry.get_sample_value("crm_event_to_push_seconds_count")
    assert value is not None
    return value


def test_changes_reach_only_subscribed_clients_serialized_once() -> None:
    hub, _ = broadcaster()
    alice, everyone, nobody = LiveClient(10), LiveClient(10), LiveClient(10)
    alice.subscribe(("m:alice",))
    everyone.subscribe(None)
    for client in (alice, everyone, nobody):
        hub.register(client)
        drain(client)  # the snapshot requests

    hub.publish(entry("5-0", "m:alice", "m:bob"))

    [to_alice] = drain(alice)
    to_everyone = drain(everyone)
    assert drain(nobody) == []
    assert [change.scope for change in to_everyone] == ["m:alice", "m:bob"]
    assert to_alice.text is to_everyone[0].text  # derived and serialized once for all clients
    message = json.loads(to_alice.text)
    assert message == {
        "type": "change",
        "seq": "5-0",
        "scope": "m:alice",
        "g": "day",
        "b": "2026-11-27",
        "kpis": message["kpis"],
    }
    assert message["kpis"]["calls"] == 1


def test_pipeline_changes_are_derived_with_the_funnel_probabilities() -> None:
    hub, _ = broadcaster()
    client = LiveClient(10)
    client.subscribe(("c",))
    hub.register(client)
    drain(client)

    hub.publish(entry("6-0", current=("c",)))

    [change] = drain(client)
    message = json.loads(change.text)
    assert message["type"] == "pipeline"
    assert message["pipeline"]["stages"]["new"]["open_deals"] == 1
    assert message["pipeline"]["weighted_pipeline"] == "0.1000"


def test_a_subscribe_queues_its_snapshot_ahead_of_the_changes() -> None:
    client = LiveClient(10)

    client.subscribe(("m:alice", "c"))

    assert drain(client) == [SnapshotRequest(("m:alice", "c"))]


def test_changes_already_in_the_snapshot_are_skipped() -> None:
    client = LiveClient(10)
    client.subscribe(("m:alice",))
    client.snapshot_taken(("m:alice",), (100, 2))

    assert not client.is_news(OutgoingChange((100, 2), "m:alice", ""))
    assert not client.is_news(OutgoingChange((99, 7), "m:alice", ""))
    assert client.is_news(OutgoingChange((100, 3), "m:alice", ""))
    assert not client.is_news(OutgoingChange((200, 0), "m:bob", ""))  # not subscribed


def test_a_star_snapshot_sets_the_floor_of_every_scope() -> None:
    client = LiveClient(10)
    client.subscribe(None)
    client.snapshot_taken(None, (50, 0))

    assert not client.is_news(OutgoingChange((50, 0), "m:new-manager", ""))
    assert client.is_news(OutgoingChange((50, 1), "m:new-manager", ""))
    client.unsubscribe(None)
    assert not client.is_news(OutgoingChange((60, 0), "m:new-manager", ""))


def test_a_full_queue_drops_that_client_only() -> None:
    hub, metrics = broadcaster()
    slow, fast = LiveClient(3), LiveClient(3)
    for client in (slow, fast):
        client.subscribe(None)
        hub.register(client)
    drain(fast)

    for n in range(3):
        hub.publish(entry(f"{n + 1}-0", "c"))
        drain(fast)

    assert slow.overflowed.is_set()
    assert not fast.overflowed.is_set()
    assert hub.client_count == 1
    assert metrics.registry.get_sample_value("crm_ws_clients") == 1
    assert metrics.registry.get_sample_value("crm_ws_dropped_clients_total") == 1
    hub.publish(entry("9-0", "c"))
    assert [change.seq for change in drain(fast)] == [(9, 0)]
    assert not slow.offer(SnapshotRequest(None))  # nothing more is queued for a dropped client


def test_push_latency_is_observed_once_per_entry_whatever_the_number_of_clients() -> None:
    hub, metrics = broadcaster()
    for _ in range(3):
        client = LiveClient(10)
        client.subscribe(None)
        hub.register(client)
    produced_ms = int(time.time() * 1000) - 200

    hub.publish(entry("1-0", "c", "m:alice", produced_ms=produced_ms))

    assert histogram_count(metrics) == 1
    total = metrics.registry.get_sample_value("crm_event_to_push_seconds_sum")
    assert total is not None and 0.2 <= total < 5


def test_no_latency_is_recorded_when_nobody_receives_the_change() -> None:
    hub, metrics = broadcaster()
    client = LiveClient(10)
    client.subscribe(("m:alice",))
    hub.register(client)

    hub.publish(entry("1-0", "m:bob", produced_ms=int(time.time() * 1000)))
    hub.publish(entry("2-0", "m:alice"))  # no produced_ms: nothing to measure

    assert histogram_count(metrics) == 0
