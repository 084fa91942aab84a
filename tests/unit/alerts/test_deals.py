"""Deal rules: one series per open deal, too long in a stage or without activity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from alerts.deals import DealFacts, days_since, index_cutoffs, watches
from alerts.errors import ConfigError
from alerts.evaluator import Evaluator
from alerts.rules import parse_config

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CONFIG = {
    "receivers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:1/x", "secret": "s"}],
    "route": {"receiver": "hook", "group_by": ["alertname", "deal_id"], "group_wait": "0s", "group_interval": "1s"},
    "rules": [
        {
            "id": "stuck-negotiation",
            "name": "StuckInNegotiation",
            "kpi": "deal.days_in_stage",
            "stages": ["negotiation"],
            "scope": {"kind": "company"},
            "condition": {"op": ">", "threshold": "14"},
            "severity": "warning",
            "summary": "{deal_id} of {manager} has been in {stage} for {value} days",
        },
        {
            "id": "idle-north",
            "name": "IdleDeal",
            "kpi": "deal.days_idle",
            "scope": {"kind": "team", "ids": ["north"]},
            "condition": {"op": ">=", "threshold": "7", "recovery_threshold": "3"},
            "for": "1h",
        },
    ],
}


def facts(deal_id: str, stage: str, in_stage_days: float, idle_days: float, team: str | None = "north") -> DealFacts:
    return DealFacts(
        deal_id=deal_id,
        stage=stage,
        stage_since=NOW - timedelta(days=in_stage_days),
        last_activity=NOW - timedelta(days=idle_days),
        manager_id="ann",
        team_id=team,
    )


def evaluator() -> Evaluator:
    ev = Evaluator(ZoneInfo("UTC"))
    ev.configure(parse_config(CONFIG))
    return ev


def test_a_deal_too_long_in_its_stage_fires_with_its_labels_and_resolves_when_it_moves() -> None:
    ev = evaluator()
    deals = {
        "d1": facts("d1", "negotiation", 15, 1),
        "d2": facts("d2", "proposal", 30, 1),
        "d3": facts("d3", "negotiation", 10, 1),
    }
    ev.apply_deals(NOW, deals, {})
    ev.tick(NOW, {})
    changes = ev.take_changes()
    # d2 is in another stage, d3 too young: only d1 has a series.
    assert sorted(ev.series) == ["stuck-negotiation|deal:d1"]
    (state,) = [h for h in changes.history if h["kind"] == "state"]
    assert (state["to"], state["value"], state["rule_name"], state["severity"]) == (
        "firing",
        "15.00",
        "StuckInNegotiation",
        "warning",
    )
    assert state["message"] == "d1 of ann has been in negotiation for 15.0 days"
    labels = state["labels"]
    assert {k: labels[k] for k in ("deal_id", "stage", "manager_id", "team_id", "manager", "team", "scope_kind")} == {
        "deal_id": "d1",
        "stage": "negotiation",
        "manager_id": "ann",
        "team_id": "north",
        "manager": "ann",
        "team": "north",
        "scope_kind": "deal",
    }
    (note,) = changes.notifications
    assert note.firing[0].labels == labels
    # It ages on every tick without a read of the indexes.
    ev.tick(NOW + DAY, {})
    assert ev.series["stuck-negotiation|deal:d1"].state.value == 16
    ev.take_changes()
    # The deal moves on to a stage the rule does not watch: no value, it resolves with the same identity.
    moved = {"d1": facts("d1", "won-ish", 0, 0)}
    ev.apply_deals(NOW + 2 * DAY, moved, {})
    ev.tick(NOW + 2 * DAY, {})
    changes = ev.take_changes()
    (state_after,) = [h for h in changes.history if h["kind"] == "state"]
    assert (state_after["to"], state_after["reason"]) == ("resolved", "no_value")
    assert state_after["fingerprint"] == state["fingerprint"] and state_after["labels"]["stage"] == "negotiation"
    (note,) = changes.notifications
    assert note.status == "resolved" and note.resolved[0].fingerprint == state["fingerprint"]


def test_idle_deals_with_pending_period_hysteresis_and_close() -> None:
    ev = evaluator()
    ev.apply_deals(NOW, {"d1": facts("d1", "new", 20, 8), "d9": facts("d9", "new", 20, 8, team="south")}, {})
    assert ev.series["idle-north|deal:d1"].state.status == "pending"
    assert "idle-north|deal:d9" not in ev.series  # team south is not selected
    ev.tick(NOW + timedelta(hours=1), {})
    assert ev.series["idle-north|deal:d1"].state.status == "firing"
    # A call five days ago: between the recovery threshold (3) and the threshold (7), still firing.
    ev.apply_deals(NOW + timedelta(hours=1), {"d1": facts("d1", "new", 20, 5)}, {})
    assert ev.series["idle-north|deal:d1"].state.status == "firing"
    # Closed: gone from the index, resolved.
    ev.take_changes()
    ev.apply_deals(NOW + timedelta(hours=2), {"d1": None}, {})
    changes = ev.take_changes()
    assert [(h["to"], h["reason"]) for h in changes.history if h["kind"] == "state"] == [("resolved", "no_value")]
    # Its series is forgotten (in Redis too): a closed deal is not read again.
    assert changes.series == {"idle-north|deal:d1": None}
    assert ev.deal_series_ids() == set()


def test_index_cutoffs_take_the_youngest_deal_any_rule_can_breach_or_keep() -> None:
    rules = parse_config(CONFIG).rules
    cutoffs = index_cutoffs(rules, NOW)
    assert cutoffs == {"stage": NOW - 14 * DAY, "activity": NOW - 3 * DAY}
    assert str(days_since(NOW - timedelta(days=2, seconds=-1), NOW)) == "1.99"  # rounded down
    idle = rules[1]
    assert watches(idle, facts("d", "new", 1, 1)) and not watches(idle, facts("d", "new", 1, 1, team=None))


def test_deal_rules_are_validated() -> None:
    rule = CONFIG["rules"][0]
    with pytest.raises(ConfigError, match="too old"):
        parse_config({"rules": [{**rule, "condition": {"op": "<", "threshold": 3}}]})
    with pytest.raises(ConfigError, match="compare must be 'value'"):
        parse_config({"rules": [{**rule, "condition": {"op": ">", "threshold": 3, "compare": "change"}}]})
    with pytest.raises(ConfigError, match="'stages' filters"):
        parse_config({"rules": [{**rule, "kpi": "calls"}]})
