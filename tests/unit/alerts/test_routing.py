"""Routing, grouping, silences, acknowledgements, repeats and resolved notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.routing import Group, add_alert, flush, match_routes, options_for
from services.schemas.alerts import Acknowledgement, Alert, Notification, Route, Silence

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)

ROOT = Route.model_validate(
    {
        "receiver": "team-email",
        "group_by": ["alertname"],
        "group_wait": "10s",
        "group_interval": "60s",
        "repeat_interval": "1h",
        "routes": [
            {"matchers": ['severity="critical"'], "receiver": "oncall-slack", "continue": True},
            {"matchers": ['severity=~"critical|warning"'], "receiver": "hook", "repeat_interval": "off"},
        ],
    }
)


def alert(fp: str, status: str = "firing", *, starts: datetime = T0, **labels: str) -> Alert:
    return Alert(
        fingerprint=fp,
        rule_id="r",
        labels={"alertname": "LowCalls", "severity": "warning", **labels},
        status=status,  # type: ignore[arg-type]
        starts_at=starts,
        ends_at=None if status == "firing" else starts + S,
    )


def test_routes_first_match_continue_and_inheritance() -> None:
    critical = match_routes(ROOT, {"severity": "critical"})
    assert [(o.receiver, o.route_id) for o in critical] == [("oncall-slack", "0.0"), ("hook", "0.1")]
    assert critical[0].repeat_interval == timedelta(hours=1) and critical[1].repeat_interval is None
    assert critical[0].group_wait == timedelta(seconds=10)
    assert [o.receiver for o in match_routes(ROOT, {"severity": "info"})] == ["team-email"]


def run_group(
    events: list[tuple[timedelta, Alert]], until: timedelta, **kwargs: object
) -> list[tuple[timedelta, Notification]]:
    """Feed alert changes at their offsets and flush whenever due (every second); the notifications."""
    groups: dict[str, Group] = {}
    sent: list[tuple[timedelta, Notification]] = []
    pending = sorted(events, key=lambda e: e[0])
    step = timedelta(0)
    while step <= until:
        now = T0 + step
        while pending and pending[0][0] <= step:
            groups.update(add_alert(groups, ROOT, pending.pop(0)[1], now))
        for key, group in list(groups.items()):
            if group.next_flush_at <= now:
                options = options_for(ROOT, group)
                assert options is not None
                after, note = flush(group, options, now, **kwargs)  # type: ignore[arg-type]
                if after is None:
                    del groups[key]
                else:
                    groups[key] = after
                if note is not None:
                    sent.append((step, note))
        step += S
    return sent


def test_group_wait_batches_then_resolved_then_nothing_more() -> None:
    sent = run_group(
        [
            (0 * S, alert("a")),
            (5 * S, alert("b")),
            (100 * S, alert("a", "resolved")),
            (100 * S, alert("b", "resolved")),
        ],
        until=timedelta(minutes=10),
    )
    assert [(at.seconds, n.status, len(n.firing), len(n.resolved)) for at, n in sent] == [
        (10, "firing", 2, 0),  # both, once, after group_wait
        (130, "resolved", 0, 2),  # at the next group_interval tick
    ]
    assert len({n.id for _, n in sent}) == 2


def test_repeat_interval_and_acknowledgement() -> None:
    firing = alert("a", severity="info")  # routed to team-email: repeat every hour
    sent = run_group([(0 * S, firing)], until=timedelta(hours=2, minutes=5))
    assert [at.seconds for at, n in sent] == [10, 3610, 7210]  # the first, then a repeat every hour (on a tick)
    assert [n.repeat for _, n in sent] == [False, True, True]
    assert run_group([(0 * S, alert("a"))], until=timedelta(hours=3))[1:] == []  # the hook's repeats are off
    ack = Acknowledgement(fingerprint="a", episode=T0, by="lead", at=T0)
    acked = run_group([(0 * S, firing)], until=timedelta(hours=2, minutes=5), acks={"a": ack})
    assert [at for at, _ in acked] == [10 * S]
    old_ack = Acknowledgement(fingerprint="a", episode=T0 - timedelta(days=1), by="lead", at=T0)
    assert len(run_group([(0 * S, firing)], until=timedelta(hours=2, minutes=5), acks={"a": old_ack})) == 3


def test_silences_expire_and_until_resolved_ends_with_the_alert() -> None:
    by_label = Silence(id="s1", matchers=('alertname="LowCalls"',), starts_at=T0, ends_at=T0 + timedelta(minutes=3))
    sent = run_group([(0 * S, alert("a"))], until=timedelta(minutes=5), silences=[by_label])
    assert [at.seconds for at, _ in sent] == [190]  # the first tick after the silence ended
    until_resolved = Silence(id="s2", fingerprint="a", episode=T0, starts_at=T0)
    sent = run_group(
        [(0 * S, alert("a")), (120 * S, alert("a", "resolved"))], until=timedelta(minutes=5), silences=[until_resolved]
    )
    assert sent == []  # muted while firing, and nothing to resolve that was never told
    later = alert("a", starts=T0 + timedelta(minutes=10))
    sent = run_group([(600 * S, later)], until=timedelta(minutes=11), silences=[until_resolved])
    assert len(sent) == 1  # a new episode is not covered


def test_send_resolved_off() -> None:
    sent = run_group(
        [(0 * S, alert("a")), (30 * S, alert("a", "resolved"))], until=timedelta(minutes=5), send_resolved=False
    )
    assert [(n.status, len(n.firing)) for _, n in sent] == [("firing", 1)]


@settings(max_examples=150, deadline=None)
@given(
    changes=st.lists(
        st.tuples(st.integers(min_value=0, max_value=600), st.sampled_from(["a", "b", "c"]), st.booleans()),
        max_size=12,
    )
)
def test_every_episode_told_once_and_its_resolution_once(changes: list[tuple[int, str, bool]]) -> None:
    """Whatever the order of changes: an episode that fires across a flush is announced exactly once as new,
    a resolution is told only for an announced episode and at most once, and flushes keep group_interval."""
    status: dict[str, Alert] = {}
    events: list[tuple[timedelta, Alert]] = []
    for at, fp, fire in sorted(changes):
        current = status.get(fp)
        if fire and (current is None or current.status == "resolved"):
            status[fp] = alert(fp, starts=T0 + at * S)
        elif not fire and current is not None and current.status == "firing":
            status[fp] = current.model_copy(update={"status": "resolved", "ends_at": T0 + at * S})
        else:
            continue
        events.append((at * S, status[fp]))
    sent = run_group(events, until=timedelta(minutes=20))
    announced: list[str] = []
    told_resolved: list[str] = []
    for _, note in sent:
        for fired in note.firing:
            episode = f"{fired.fingerprint}@{fired.starts_at}"
            if not note.repeat and episode not in announced:
                announced.append(episode)
        for done in note.resolved:
            episode = f"{done.fingerprint}@{done.starts_at}"
            assert episode in announced
            told_resolved.append(episode)
    assert len(told_resolved) == len(set(told_resolved))
    # Within one group's life, notifications keep group_interval (a group emptied and born again waits group_wait).
    for (earlier, first), (later, second) in pairwise(sent):
        if first.id.split("-")[0] == second.id.split("-")[0]:
            assert later - earlier >= timedelta(seconds=60)
    # Every episode still firing at the end was announced.
    for fp, last in status.items():
        if last.status == "firing":
            assert f"{fp}@{last.starts_at}" in announced
