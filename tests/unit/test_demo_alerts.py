"""The demo's example alert rules: valid for the configured funnel, and crossed by the simulated
office within the demo's first minutes."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from services.demo_alerts import LOW_WIN_RATE, TEAM_CALLS_PER_DAY, demo_rules
from services.settings import BusinessSettings, Settings
from services.simulation import Simulation, SimulationConfig
from services.simulator import DEFAULT_RATE

TWO_MINUTES_S = 120


def test_the_rules_are_valid_and_follow_the_funnel() -> None:
    rules = demo_rules(Settings().business)
    assert [rule.id for rule in rules] == [
        "demo-team-calls",
        "demo-low-win-rate",
        "demo-behind-plan",
        "demo-stuck-deal",
    ]
    assert all(rule.id.startswith("demo-") and rule.enabled for rule in rules)
    assert rules[-1].stages == ("negotiation",)
    funnel = [{"name": "lead", "probability": "0.1"}, {"name": "contract", "probability": "0.8"}]
    custom = demo_rules(BusinessSettings.model_validate({"funnel": funnel}))
    assert custom[-1].stages == ("contract",)


@pytest.mark.parametrize(
    "start",
    [
        datetime(2026, 11, 23, 10, 17, tzinfo=UTC),  # a Monday morning
        datetime(2026, 11, 27, 19, 17, tzinfo=UTC),  # Friday evening: the simulation goes on on Monday
        datetime(2026, 11, 29, 3, 17, tzinfo=UTC),  # a Sunday night
    ],
    ids=lambda start: start.strftime("%a-%H%M"),
)
def test_the_simulated_office_crosses_the_thresholds_within_two_minutes(start: datetime) -> None:
    """What the demo's simulator sends in its first two minutes (default rate and seed; the live mode
    starts its simulation at the wall clock): every team makes more calls than the calls rule's
    threshold, and some team closes deals below the win rate."""
    simulation = Simulation(SimulationConfig(), seed=1)
    team_of = {manager.manager_id: manager.team_id for manager in simulation.managers}
    calls: Counter[str] = Counter()
    closed: dict[str, Counter[str]] = {team: Counter() for team in team_of.values()}
    for event in simulation.events(start, count=int(DEFAULT_RATE * TWO_MINUTES_S)):
        team = event.get("team_id") or team_of[event["manager_id"]]
        if event["type"] == "call":
            calls[team] += 1
        elif event["type"] in ("deal_won", "deal_lost"):
            closed[team][event["type"]] += 1
    assert set(calls) == set(team_of.values())
    assert min(calls.values()) > TEAM_CALLS_PER_DAY
    low = [
        team for team, counts in closed.items() if counts.total() and counts["deal_won"] / counts.total() < LOW_WIN_RATE
    ]
    assert low, closed
