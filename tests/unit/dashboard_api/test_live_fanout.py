"""Fan-out of changes to live clients: subscriptions, KPI filters, snapshot floors, coalescing, overflow,
alerts, the latency metric."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from dashboard_api.auth import ScopeFilter
from dashboard_api.broadcaster import (
    ChangeBroadcaster,
    LiveClient,
    OutgoingAlert,
    OutgoingChange,
    SnapshotRequest,
    coalesce,
)
from dashboard_api.changes import BucketChange, ChangeEntry, CurrentChange
from dashboard_api.live_messages import alert_text, decode_alert_entry
from dashboard_api.metrics import ApiMetrics
from services.auth import Principal, Role

PROBABILITIES = {"new": Decimal("0.1"), "won_soon": Decimal("0.9")}
EVERY_ALERT = ScopeFilter(Principal(Role.DIRECTOR, "dora"), ())


def entry(
    seq: str,
    *scopes: str,
    produced_ms: int | None = None,
    current: tuple[str, ...] = (),
    measures: dict[str, int] | None = None,
) -> ChangeEntry:
    return ChangeEntry(
        seq=seq,
        produced_ms=produced_ms,
        committed_ms=None,
        buckets=tuple(BucketChange(scope, "day", "2026-11-27", measures or {"calls": 1}) for scope in scopes),
        current=tuple(CurrentChange(scope, {"pipe_n:new": 1, "pipe_amt:new": 10_000}) for scope in current),
    )


def broadcaster() -> tuple[ChangeBroadcaster, ApiMetrics]:
    metrics = ApiMetrics()
    return ChangeBroadcaster(redis=None, keys=None, metrics=metrics, probabilities=PROBABILITIES), metrics  # type: ignore[arg-type]


def drain(client: LiveClient) -> list[Any]:
    items = []
    while (item := client.get_nowait()) is not None:
        items.append(item)
    return items


def change(seq: tuple[int, int], scope: str, i: int = 0) -> OutgoingChange:
    return OutgoingChange((*seq, i), scope, ("b", scope, "day", "2026-11-27"), "")


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
        "i": 0,
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

    assert not client.is_news(change((100, 2), "m:alice", i=5))
    assert not client.is_news(change((99, 7), "m:alice"))
    assert client.is_news(change((100, 3), "m:alice"))
    assert not client.is_news(change((200, 0), "m:bob"))  # not subscribed


def test_a_star_snapshot_sets_the_floor_of_every_scope() -> None:
    client = LiveClient(10)
    client.subscribe(None)
    client.snapshot_taken(None, (50, 0))

    assert not client.is_news(change((50, 0), "m:new-manager"))
    assert client.is_news(change((50, 1), "m:new-manager"))
    client.unsubscribe(None)
    assert not client.is_news(change((60, 0), "m:new-manager"))


def test_a_full_queue_drops_that_client_only() -> None:
    hub, metrics = broadcaster()
    slow, fast = LiveClient(3), LiveClient(3)
    for client in (slow, fast):
        client.subscribe(None)
        hub.register(client)
    drain(fast)

    for n in range(3):
        hub.publish(entry(f"{n + 1}-0", f"m:{n}"))  # distinct buckets: nothing to coalesce
        drain(fast)

    assert slow.overflowed.is_set()
    assert not fast.overflowed.is_set()
    assert hub.client_count == 1
    assert metrics.registry.get_sample_value("crm_ws_clients") == 1
    assert metrics.registry.get_sample_value("crm_ws_dropped_clients_total") == 1
    hub.publish(entry("9-0", "c"))
    assert [change.position for change in drain(fast)] == [(9, 0, 0)]
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


def test_kpi_filters_share_one_text_per_filter_and_skip_changes_that_touch_none_of_their_kpis() -> None:
    hub, _ = broadcaster()
    calls_a, calls_b, revenue, everything = LiveClient(10), LiveClient(10), LiveClient(10), LiveClient(10)
    calls_a.subscribe(("c",), kpis=["calls", "meetings"])
    calls_b.subscribe(("c",), kpis=["meetings", "calls"])
    revenue.subscribe(("c",), kpis=["revenue"])
    everything.subscribe(("c",))
    for client in (calls_a, calls_b, revenue, everything):
        hub.register(client)
        drain(client)

    hub.publish(entry("1-0", "c", measures={"calls": 1}))  # first sight of the bucket: sent to all
    assert all(len(drain(client)) == 1 for client in (calls_a, calls_b, revenue, everything))
    hub.publish(entry("2-0", "c", measures={"calls": 2}))  # revenue unchanged

    [to_a], [to_b], [to_all] = drain(calls_a), drain(calls_b), drain(everything)
    assert drain(revenue) == []
    assert to_a.text is to_b.text  # one serialization per filter
    assert json.loads(to_a.text)["kpis"] == {"calls": 2, "meetings": 0}
    assert "revenue" in json.loads(to_all.text)["kpis"]


def test_the_pipeline_goes_only_to_filters_that_name_it() -> None:
    hub, _ = broadcaster()
    with_pipeline, without = LiveClient(10), LiveClient(10)
    with_pipeline.subscribe(("c",), kpis=["calls", "pipeline"])
    without.subscribe(("c",), kpis=["calls"])
    for client in (with_pipeline, without):
        hub.register(client)
        drain(client)

    hub.publish(entry("1-0", current=("c",)))

    assert [json.loads(c.text)["type"] for c in drain(with_pipeline)] == ["pipeline"]
    assert drain(without) == []


def test_a_newer_change_of_a_queued_bucket_replaces_it_at_the_end_of_the_queue() -> None:
    hub, _ = broadcaster()
    client = LiveClient(10)
    client.subscribe(None)
    hub.register(client)
    drain(client)

    hub.publish(entry("1-0", "m:a", "m:b", measures={"calls": 1}))
    hub.publish(entry("2-0", "m:a", measures={"calls": 2}))

    queued = drain(client)
    assert [(c.scope, c.position) for c in queued] == [("m:b", (1, 0, 1)), ("m:a", (2, 0, 0))]
    assert json.loads(queued[1].text)["kpis"]["calls"] == 2
    assert client.coalesced == 1


def test_entries_read_together_are_coalesced_per_bucket_in_position_order() -> None:
    items = coalesce(
        [
            entry("1-0", "m:a", "m:b", measures={"calls": 1}),
            entry("2-0", "m:c", "m:a", measures={"calls": 2}, current=("m:b",)),
        ]
    )

    assert [(item.scope, item.granularity, item.position) for item in items] == [
        ("m:b", "day", (1, 0, 1)),
        ("m:c", "day", (2, 0, 0)),
        ("m:a", "day", (2, 0, 1)),
        ("m:b", "current", (2, 0, 2)),
    ]
    assert items[2].measures == {"calls": 2}


def test_a_resume_floor_inside_an_entry_skips_only_what_the_client_has() -> None:
    client = LiveClient(10)
    client.subscribe(("c",), resume=("7-0", 1))
    client.caught_up(("c",), (7, 0, 1))

    assert not client.is_news(change((7, 0), "c", i=1))
    assert client.is_news(change((7, 0), "c", i=2))


def test_alerts_reach_only_clients_following_them_as_small_messages() -> None:
    hub, _ = broadcaster()
    ticker, other = LiveClient(10), LiveClient(10)
    ticker.subscribe_alerts(EVERY_ALERT)
    other.subscribe(("c",))
    for client in (ticker, other):
        hub.register(client)
        drain(client)
    state = {
        "kind": "state",
        "at": "2026-11-28T02:00:00+00:00",
        "rule_id": "low-calls",
        "scope": "t:team-01",
        "fingerprint": "ab12",
        "from": "pending",
        "to": "firing",
        "reason": "for_elapsed",
        "value": "3",
        "labels": {"alertname": "Low calls", "severity": "warning", "team": "team-01", "kpi": "calls"},
        "rule_name": "Low calls",
        "severity": "warning",
        "kpi": "calls",
        "message": "team-01 made 3 calls today",
        "threshold": "5",
    }

    hub.publish_alert("5-0", {b"data": json.dumps(state).encode()})

    [alert] = drain(ticker)
    assert drain(other) == []
    assert isinstance(alert, OutgoingAlert)
    assert json.loads(alert.text) == {
        "type": "alert",
        "seq": "5-0",
        "kind": "state",
        "at": "2026-11-28T02:00:00+00:00",
        "alertname": "Low calls",
        "severity": "warning",
        "message": "team-01 made 3 calls today",
        "kpi": "calls",
        "rule_id": "low-calls",
        "scope": "t:team-01",
        "fingerprint": "ab12",
        "from": "pending",
        "to": "firing",
        "value": "3",
    }


def test_a_notification_becomes_an_alert_message_with_counts() -> None:
    note = {
        "kind": "notification",
        "outcome": "sent",
        "at": "2026-11-28T02:00:00+00:00",
        "id": "n1",
        "receiver": "slack-sales",
        "status": "firing",
        "repeat": False,
        "firing": ["a", "b"],
        "resolved": [],
        "attempt": 1,
    }

    decoded = decode_alert_entry("6-0", {b"data": json.dumps(note).encode()})

    assert decoded is not None
    assert json.loads(alert_text("6-0", decoded)) == {
        "type": "alert",
        "seq": "6-0",
        "kind": "notification",
        "at": "2026-11-28T02:00:00+00:00",
        "outcome": "sent",
        "receiver": "slack-sales",
        "status": "firing",
        "firing": 2,
        "resolved": 0,
    }
    assert decode_alert_entry("7-0", {b"data": b"not json"}) is None


def test_each_ticker_gets_only_the_alerts_of_the_scopes_it_reads() -> None:
    hub, _ = broadcaster()
    lead = ScopeFilter(Principal(Role.TEAM_LEAD, "lena", team_id="team-01"), frozenset({"alice"}))
    director, team_lead = LiveClient(10), LiveClient(10)
    director.subscribe_alerts(EVERY_ALERT)
    team_lead.subscribe_alerts(lead)
    for client in (director, team_lead):
        hub.register(client)
    alerts = {
        "1-0": {"kind": "state", "scope": "t:team-01"},
        "2-0": {"kind": "state", "scope": "t:team-02"},
        "3-0": {"kind": "state", "scope": "m:alice"},
        "4-0": {"kind": "state", "scope": "c"},
        "5-0": {"kind": "state", "scope": "deal:d1", "labels": {"manager": "carol", "team": "team-01"}},
        "6-0": {"kind": "state", "scope": "deal:d2", "labels": {"manager": "carol", "team": "team-02"}},
        "7-0": {"kind": "notification", "firing": ["f1"]},
    }

    for seq, alert in alerts.items():
        hub.publish_alert(seq, {b"data": json.dumps(alert).encode()})

    assert [json.loads(alert.text)["seq"] for alert in drain(director)] == list(alerts)
    assert [json.loads(alert.text)["seq"] for alert in drain(team_lead)] == ["1-0", "3-0", "5-0"]
