"""The simulated sales organisation: managers in teams, and where their deals come from."""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.simulation.config import SimulationConfig


@dataclass(frozen=True)
class LeadSource:
    """Where deals come from; sources differ in volume, win rate, deal size and cycle length."""

    name: str
    share: float  # of deals with new customers
    win_rate: float  # for an average manager
    median_amount: int  # in whole currency units
    cycle_days: float  # typical working days from creation to close


LEAD_SOURCES: tuple[LeadSource, ...] = (
    LeadSource("web", 0.28, 0.20, 3_500, 12),
    LeadSource("referral", 0.14, 0.42, 9_000, 18),
    LeadSource("cold_call", 0.22, 0.10, 2_500, 15),
    LeadSource("partner", 0.10, 0.33, 18_000, 30),
    LeadSource("event", 0.12, 0.25, 6_000, 20),
    LeadSource("email_campaign", 0.14, 0.14, 2_000, 10),
)
UPSELL = LeadSource("upsell", 0.0, 0.55, 5_000, 8)
"""Deals with a customer that already won one: repeat business."""

LOST_REASONS = ("price", "competitor", "no_budget", "timing", "no_decision")
CALL_OUTCOMES = ("connected", "voicemail", "no_answer", "busy")
MEETING_OUTCOMES = ("held", "no_show", "rescheduled")


@dataclass(frozen=True)
class ManagerProfile:
    """A simulated sales manager and how they work."""

    manager_id: str
    team_id: str
    skill: float  # multiplies win rates
    calls_per_day: int
    meetings_per_day: float
    deals_per_day: float
    utc_timestamps: bool  # this manager's CRM sends UTC ``Z`` times instead of local offsets


def draw_managers(config: SimulationConfig, rng: random.Random) -> tuple[ManagerProfile, ...]:
    """The managers (``mgr-001``...), spread evenly over the teams (``team-01``...), with their habits."""
    width = max(3, len(str(config.managers)))
    team_width = max(2, len(str(config.teams)))
    profiles = []
    for index in range(config.managers):
        team = index * config.teams // config.managers
        profiles.append(
            ManagerProfile(
                manager_id=f"mgr-{index + 1:0{width}d}",
                team_id=f"team-{team + 1:0{team_width}d}",
                skill=min(1.6, max(0.6, rng.lognormvariate(0, 0.25))),
                calls_per_day=rng.randint(20, 60),
                meetings_per_day=rng.uniform(1.0, 4.0),
                deals_per_day=rng.uniform(0.5, 1.6),
                utc_timestamps=rng.random() < 0.2,
            )
        )
    return tuple(profiles)
