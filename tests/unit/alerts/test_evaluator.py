"""The evaluator: KPI updates and ticks through rules, series, groups and notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from alerts.errors import ConfigError
from alerts.evaluator import Evaluator, KpiUpdate, previous_bucket
from alerts.rules import load_config, parse_config
from services.schemas.alerts import ActiveHours, Rule

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # a Friday
CONFIG = {
    "receivers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:1/x", "secret": "s"}],
    "route": {"receiver": "hook", "group_by": ["alertname", "scope"], "group_wait": "0s", "group_interval": "10s"},
    "rules": [
        {
            "id": "low-win-rate",
            "name": "LowWinRate",
            "kpi": "win_rate",
            "scope": {"kind": "manager", "team": "north"},
            "period": "day",
            "condition": {"op": "<", "threshold": "0.5", "recovery_threshold": "0.6"},
            "for": "1m",
            "severity": "critical",
            "labels": {"team_channel": "north"},
            "summary": "{alertname}: win rate of {scope_id} is {value} (< {threshold}), team {labels.team}",
        },
        {
            "id": "calls-drop",
            "name": "CallsDrop",
            "kpi": "calls",
            "scope": {"kind": "company"},
            "period": "day",
            "condition": {"op": "<=", "threshold": "-50", "compare": "change_pct"},
        },
    ],
}
TEAMS = {"north": frozenset({"ann"})}


def update(scope: str, seq: str, bucket: str = "2026-11-27", **measures: int) -> KpiUpdate:
    return KpiUpdate(seq=seq, scope=scope, granularity="day", bucket=bucket, measures=measures)


def evaluator() -> Evaluator:
    ev = Evaluator(ZoneInfo("UTC"))
    ev.configure(parse_config(CONFIG))
    return ev


def test_breach_pending_firing_notification_and_resolution() -> None:
    ev = evaluator()
    ev.apply_update(update("m:ann", "1-0", deals_won=1, deals_lost=3), NOW, {}, TEAMS)
    ev.apply_update(update("m:bob", "1-1", deals_won=0, deals_lost=3), NOW, {}, TEAMS)  # not in team north
    ev.tick(NOW, {})
    changes = ev.take_changes()
    assert [(h["scope"], h["to"]) for h in changes.history] == [("m:ann", "pending")]
    assert not changes.notifications
    ev.tick(NOW + timedelta(minutes=1), {})
    changes = ev.take_changes()
    assert [h["to"] for h in changes.history if h["kind"] == "state"] == ["firing"]
    (note,) = changes.notifications
    assert note.status == "firing" and note.receiver == "hook"
    (fired,) = note.firing
    assert fired.labels["manager"] == "ann" and fired.labels["severity"] == "critical"
    assert fired.annotations["summary"] == "LowWinRate: win rate of ann is 25% (< 50%), team north"  # as people read it
    assert fired.starts_at == NOW
    # 0.55 is inside the hysteresis band: still firing; 0.6 resolves.
    ev.apply_update(update("m:ann", "2-0", deals_won=11, deals_lost=9), NOW + timedelta(minutes=2), {}, TEAMS)
    assert ev.series["low-win-rate|m:ann"].state.status == "firing"
    ev.apply_update(update("m:ann", "3-0", deals_won=6, deals_lost=4), NOW + timedelta(minutes=3), {}, TEAMS)
    ev.tick(NOW + timedelta(minutes=3), {})
    changes = ev.take_changes()
    (note,) = changes.notifications
    assert note.status == "resolved" and note.resolved[0].ends_at == NOW + timedelta(minutes=3)


def test_redelivered_and_past_updates_are_ignored() -> None:
    ev = evaluator()
    ev.apply_update(update("m:ann", "5-0", deals_won=0, deals_lost=1), NOW, {}, TEAMS)
    ev.apply_update(update("m:ann", "4-0", deals_won=9, deals_lost=1), NOW, {}, TEAMS)  # older seq
    ev.apply_update(update("m:ann", "6-0", "2026-11-26", deals_won=9), NOW, {}, TEAMS)  # yesterday
    assert ev.series["low-win-rate|m:ann"].state.status == "pending"
    assert ev.series["low-win-rate|m:ann"].seq == "5-0"


def test_change_against_the_previous_period_and_roll_over() -> None:
    ev = evaluator()
    yesterday = {("c", "day", "2026-11-26"): {"calls": 10}}
    assert ("c", "day", "2026-11-26") in ev.needed_buckets([update("c", "1-0", calls=4)], NOW)
    ev.apply_update(update("c", "1-0", calls=4), NOW, yesterday, TEAMS)
    assert ev.series["calls-drop|c"].state.status == "firing"  # -60 %
    assert ev.series["calls-drop|c"].state.value == -60
    # Next day, no update yet: 0 calls against yesterday's 4 is -100 %, still firing; then the day moves on.
    tomorrow = NOW + timedelta(days=1)
    needed = ev.needed_buckets([], tomorrow)
    assert needed == {("c", "day", "2026-11-28"), ("c", "day", "2026-11-27")}
    ev.tick(tomorrow, {("c", "day", "2026-11-27"): {"calls": 4}, ("c", "day", "2026-11-28"): {"calls": 3}})
    assert ev.series["calls-drop|c"].state.value == -25
    assert ev.series["calls-drop|c"].state.status == "resolved"


def test_active_hours_and_removed_rules() -> None:
    hours = ActiveHours(days=("mon", "tue", "wed", "thu", "fri"), start="09:00", end="17:00")
    assert (
        hours.contains(NOW) and not hours.contains(NOW.replace(hour=17)) and not hours.contains(NOW + timedelta(days=1))
    )
    night = ActiveHours(days=("fri",), start="22:00", end="06:00")
    assert night.contains(NOW.replace(hour=23)) and night.contains(NOW.replace(hour=5) + timedelta(days=1))
    assert not night.contains(NOW.replace(hour=5))  # Friday 05:00 belongs to Thursday's night
    ev = evaluator()
    ev.apply_update(update("c", "1-0", calls=1), NOW, {("c", "day", "2026-11-26"): {"calls": 10}}, TEAMS)
    ev.tick(NOW, {})
    ev.take_changes()
    ev.configure(parse_config({**CONFIG, "rules": CONFIG["rules"][:1]}))
    ev.tick(NOW + timedelta(seconds=30), {})
    changes = ev.take_changes()
    assert "calls-drop|c" not in ev.series
    assert [h["reason"] for h in changes.history if h["kind"] == "state"] == ["rule_removed"]
    assert [n.status for n in changes.notifications] == ["resolved"]


def test_config_errors_say_what_and_where(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="unknown KPI 'callz'"):
        parse_config({"rules": [{**CONFIG["rules"][0], "kpi": "callz"}]})
    with pytest.raises(ConfigError, match="recovery_threshold"):
        parse_config(
            {"rules": [{**CONFIG["rules"][0], "condition": {"op": "<", "threshold": 1, "recovery_threshold": 0}}]}
        )
    with pytest.raises(ConfigError, match="not among the receivers"):
        parse_config({**CONFIG, "route": {"receiver": "nobody"}})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/alerts.yaml")


def test_rules_round_trip_as_json() -> None:
    rule = parse_config(CONFIG).rules[0]
    assert Rule.model_validate_json(rule.model_dump_json(by_alias=True)) == rule
    assert previous_bucket("month", "2026-01") == "2025-12" and previous_bucket("day", "2026-03-01") == "2026-02-28"
