"""The clock of an open deal: its stage, since when, its latest event and owner."""

from __future__ import annotations

from services.kpis.contributions import DealEvent
from services.kpis.deal_clock import deal_clock, score_s

DAY_US = 86_400_000_000


def event(day: int, event_id: str, kind: str, stage: str | None = None, manager: str = "ann") -> DealEvent:
    return DealEvent(t_us=day * DAY_US, event_id=event_id, type=kind, manager_id=manager, team_id="north", stage=stage)


def test_stage_entry_is_the_first_event_of_the_current_stage_in_event_order() -> None:
    history = [
        event(5, "e3", "deal_stage_changed", "negotiation"),
        event(1, "e1", "deal_created", "new"),
        event(3, "e2", "deal_stage_changed", "proposal"),
        event(7, "e4", "deal_stage_changed", "negotiation", manager="bob"),  # same stage: does not restart
    ]
    clock = deal_clock(history)
    assert clock is not None
    assert (clock.stage, clock.stage_since_us, clock.latest_us) == ("negotiation", 5 * DAY_US, 7 * DAY_US)
    assert (clock.manager_id, clock.team_id) == ("bob", "north")


def test_closed_or_uncreated_deals_have_no_clock() -> None:
    assert deal_clock([]) is None
    assert deal_clock([event(1, "e1", "deal_stage_changed", "proposal")]) is None  # deal_created unknown
    assert deal_clock([event(1, "e1", "deal_created", "new"), event(2, "e2", "deal_won")]) is None
    # A deal_lost that arrived early but happened before a later stage change: open again.
    reopened = deal_clock(
        [
            event(1, "e1", "deal_created", "new"),
            event(2, "e2", "deal_lost"),
            event(3, "e3", "deal_stage_changed", "qualified"),
        ]
    )
    assert reopened is not None and reopened.stage == "qualified"


def test_scores_are_exact_epoch_seconds() -> None:
    assert score_s(1_764_300_000_123_456) == "1764300000.123456"
    assert score_s(5) == "0.000005"
